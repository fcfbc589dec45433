//! Bad input to `oxray train` and the config loader: each mistake gives one
//! error line naming the problem (and for YAML, the key and line), exit code
//! 1, and no run directory.

mod train_support;

use std::path::{Path, PathBuf};

use oxray_trainers::algorithms::AlgorithmConfig;
use oxray_trainers::config::StopConfig;
use oxray_trainers::ExperimentConfig;
use train_support::{assert_clean_error, Scratch, SMALL_PPO};

/// Column `key` of `run`'s progress.csv, one value per iteration.
fn progress_column(run: &Path, key: &str) -> Vec<String> {
    let csv = std::fs::read_to_string(run.join("progress.csv")).unwrap();
    let mut rows = csv.lines().map(|line| line.split(','));
    let header = rows.next().expect("a header");
    let at = header
        .into_iter()
        .position(|k| k == key)
        .unwrap_or_else(|| panic!("progress.csv has no column {key}"));
    rows.map(|mut row| row.nth(at).expect("a full row").to_string())
        .collect()
}

fn parse(source: &str, overrides: &[&str]) -> Result<ExperimentConfig, String> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::parse(source, "test.yaml", &overrides).map_err(|e| e.to_string())
}

#[test]
fn defaults_fill_in_and_overrides_apply() {
    let config = parse(SMALL_PPO, &["training.lr=1e-4", "stop.env_steps=5000"]).unwrap();
    let training = match &config.training {
        AlgorithmConfig::Ppo(training) => training,
        other => panic!("algorithm: PPO gave {other:?}"),
    };
    assert_eq!(training.lr, 1e-4);
    assert_eq!(config.stop.env_steps, Some(5000));
    assert_eq!(training.gamma, 0.99);
    assert_eq!(config.reporting.metrics_num_episodes_for_smoothing, 100);
    // auto fragment length: 256 steps over 8 envs
    assert_eq!(config.rollout_fragment_length(), 32);
}

/// Ray Tune's stop keys (the result names a run's `done:` line prints) mean
/// the same criteria as oxray's own, in a file and in `--set`; giving one
/// criterion under both names is refused.
#[test]
fn stop_criteria_take_the_result_names_too() {
    // Evaluating, so the evaluation return has something to stop on.
    let without_stop =
        SMALL_PPO.replace("stop:\n  iterations: 2\n", "evaluation:\n  interval: 1\n");
    for (criterion, result) in StopConfig::RESULT_KEYS {
        let by_criterion = parse(&without_stop, &[&format!("stop.{criterion}=7")]).unwrap();
        assert_ne!(by_criterion.stop, StopConfig::default(), "{criterion}");
        let in_file = format!("{without_stop}stop:\n  {result}: 7\n");
        assert_eq!(
            parse(&in_file, &[]).unwrap().stop,
            by_criterion.stop,
            "{result}"
        );
        let by_result = parse(&without_stop, &[&format!("stop.{result}=7")]).unwrap();
        assert_eq!(by_result.stop, by_criterion.stop, "--set stop.{result}");
        let both = format!("{without_stop}stop:\n  {criterion}: 7\n  {result}: 8\n");
        if criterion == "time_s" {
            // A range error names the criterion and the line of its alias.
            let zero = format!("{without_stop}stop:\n  {result}: 0\n");
            let error = parse(&zero, &[]).unwrap_err();
            assert!(
                error.contains("stop.time_s: must be positive at line 15"),
                "{error}"
            );
        }
        let error = parse(&both, &[]).unwrap_err();
        assert!(
            error.contains(&format!("duplicate field `{criterion}`")),
            "{error}"
        );
    }
}

/// `--set` takes RLlib's Python spelling `lambda_` as the file does.
#[test]
fn an_override_takes_the_python_spelling_of_lambda() {
    let by_alias = parse(SMALL_PPO, &["training.lambda_=0.9"]).unwrap();
    let by_name = parse(SMALL_PPO, &["training.lambda=0.9"]).unwrap();
    assert_eq!(by_alias.training, by_name.training);
    assert_ne!(by_alias.training, parse(SMALL_PPO, &[]).unwrap().training);
}

/// RLlib's `num_cpus_per_learner`: `auto` reserves one CPU for a CPU
/// Learner and none for a GPU one; a number is taken as it is.
#[test]
fn cpus_per_learner_follow_rllibs_auto_rule() {
    for (overrides, cpus) in [
        (&[][..], 1.0),
        (&["learners.num_gpus_per_learner=1"][..], 0.0),
        (&["learners.num_cpus_per_learner=auto"][..], 1.0),
        (&["learners.num_cpus_per_learner=2"][..], 2.0),
        (
            &[
                "learners.num_cpus_per_learner=0.5",
                "learners.num_gpus_per_learner=1",
            ][..],
            0.5,
        ),
    ] {
        let config = parse(SMALL_PPO, overrides).unwrap();
        assert_eq!(config.learners.cpus_per_learner(), cpus, "{overrides:?}");
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let source = SMALL_PPO.replace("  num_epochs: 2", "  num_epoch: 2");
    let error = parse(&source, &[]).unwrap_err();
    assert!(
        error.contains("training: unknown field `num_epoch`"),
        "{error}"
    );
    assert!(error.contains("line 10"), "{error}");
}

/// APPO's section is IMPALA's keys plus its own at one level: a key of
/// either part is read, an unknown one is named with every valid key and its
/// own line, and a wrong type in either part keeps the key's line.
#[test]
fn appo_section_errors_name_the_key_its_line_and_the_valid_keys() {
    let source = "algorithm: APPO\nenv: CartPole-v1\ntraining:\n  lr: 1.0e-3\n  clip_param: 0.3\n";
    let config = parse(source, &[]).unwrap();
    let AlgorithmConfig::Appo(training) = &config.training else {
        panic!("algorithm: APPO gave {:?}", config.training);
    };
    assert_eq!(
        (training.impala.lr, training.appo.clip_param),
        (1.0e-3, 0.3)
    );

    let error = parse(&source.replace("clip_param", "clip_parm"), &[]).unwrap_err();
    assert!(error.contains("unknown field `clip_parm`"), "{error}");
    assert!(error.contains("`vtrace_clip_rho_threshold`"), "{error}");
    assert!(error.contains("`target_network_update_freq`"), "{error}");
    assert!(error.contains("line 5"), "{error}");

    for (key, line) in [("lr", "line 4"), ("clip_param", "line 5")] {
        let wrong = source.replace(&format!("{key}: "), &format!("{key}: [fast] #"));
        let error = parse(&wrong, &[]).unwrap_err();
        assert!(error.contains("invalid type"), "{key}: {error}");
        assert!(error.contains(line), "{key}: {error}");
    }
}

#[test]
fn wrong_type_names_key_and_line() {
    let source = SMALL_PPO.replace("lr: 1.0e-3", "lr: fast");
    let error = parse(&source, &[]).unwrap_err();
    assert!(error.contains("training.lr: invalid type"), "{error}");
    assert!(error.contains("line 7"), "{error}");
    // Keys that take `auto` or a number say so, at their own key and line.
    let sac = "algorithm: SAC\nenv: Pendulum-v1\ntraining:\n  target_entropy: lots\n";
    let error = parse(sac, &[]).unwrap_err();
    assert!(
        error.contains("training.target_entropy: invalid value: string \"lots\", expected a number or `auto` at line 4"),
        "{error}"
    );
    let learners = format!("{SMALL_PPO}learners:\n  num_cpus_per_learner: lots\n");
    let error = parse(&learners, &[]).unwrap_err();
    assert!(
        error.contains("learners.num_cpus_per_learner: invalid value: string \"lots\", expected a number of CPUs or `auto` at line 15"),
        "{error}"
    );
}

#[test]
fn out_of_range_value_names_key_and_line() {
    let source = SMALL_PPO.replace("minibatch_size: 128", "minibatch_size: 0");
    let error = parse(&source, &[]).unwrap_err();
    assert!(
        error.contains("training.minibatch_size: must be at least 1 at line 9"),
        "{error}"
    );
    let error = parse(SMALL_PPO, &["training.gamma=1.5"]).unwrap_err();
    assert!(
        error.contains("training.gamma: must be within [0, 1]"),
        "{error}"
    );
    // C51's support must be an interval, and only matters with atoms.
    let dqn = "algorithm: DQN\nenv: CartPole-v1\ntraining:\n  num_atoms: 51\n  v_min: 5.0\n";
    let error = parse(dqn, &["training.v_max=5"]).unwrap_err();
    assert!(
        error.contains("training.v_min: must be finite and below v_max when num_atoms is above 1"),
        "{error}"
    );
    assert!(parse(dqn, &["training.v_max=6"]).is_ok());
    assert!(parse(dqn, &["training.num_atoms=1", "training.v_max=5"]).is_ok());
    // NoisyNets' σ₀ scales the noise: zero or negative gives none.
    let error = parse(dqn, &["training.sigma0=.nan"]).unwrap_err();
    assert!(
        error.contains("training.sigma0=.nan: numbers must be finite"),
        "{error}"
    );
    let error = parse(dqn, &["training.epsilon=[[0, 1.0], [100, .inf]]"]).unwrap_err();
    assert!(error.contains("numbers must be finite"), "{error}");
    // A NaN in the file is named as such, with or without an override
    // (overrides once went through JSON, which made it null), and in a key
    // that has no range check of its own.
    let nan_in_file = format!("{dqn}  grad_clip: .nan\n");
    for overrides in [&[][..], &["training.lr=0.001"][..]] {
        let error = parse(&nan_in_file, overrides).unwrap_err();
        assert!(
            error.contains("training.grad_clip: must be a finite number at line 6"),
            "{error}"
        );
    }
    for sigma0 in ["0", "-0.5"] {
        let sigma0 = format!("training.sigma0={sigma0}");
        let error = parse(dqn, &["training.noisy=true", &sigma0]).unwrap_err();
        assert!(
            error.contains("training.sigma0: must be a positive number"),
            "{error}"
        );
    }
    // Each of two related keys is named when it is the wrong one.
    for (config, assignment, named) in [
        (
            SMALL_PPO,
            "training.kl_target=0",
            "training.kl_target: must be positive",
        ),
        (
            SMALL_PPO,
            "training.kl_coeff=-1",
            "training.kl_coeff: must not be negative",
        ),
        (
            dqn,
            "training.replay_buffer_config={type: PrioritizedEpisodeReplayBuffer, beta: -1}",
            "training.replay_buffer_config.beta: must not be negative",
        ),
    ] {
        let error = parse(config, &[assignment]).unwrap_err();
        assert!(error.contains(named), "{assignment}: {error}");
    }
    let error = parse(SMALL_PPO, &["learners.num_cpus_per_learner=-1"]).unwrap_err();
    assert!(
        error.contains(
            "learners.num_cpus_per_learner: must be `auto` or a number that is not negative"
        ),
        "{error}"
    );
    let error = parse(SMALL_PPO, &["learners.num_cpus_per_learner=many"]).unwrap_err();
    assert!(
        error.contains("--set learners.num_cpus_per_learner=many"),
        "{error}"
    );
    let error = parse(
        SMALL_PPO,
        &["reporting.metrics_num_episodes_for_smoothing=0"],
    )
    .unwrap_err();
    assert!(
        error.contains("reporting.metrics_num_episodes_for_smoothing: must be at least 1"),
        "{error}"
    );
    // BC's own keys, and a stop criterion on evaluations that never run.
    let bc = "algorithm: BC\nenv: CartPole-v1\noffline_data: {input_: data}\n";
    assert!(parse(bc, &["training.dataset_num_iters_per_learner=4"]).is_ok());
    let error = parse(bc, &["training.dataset_num_iters_per_learner=0"]).unwrap_err();
    assert!(
        error.contains("training.dataset_num_iters_per_learner: must be at least 1"),
        "{error}"
    );
    let error = parse(bc, &["stop.evaluation_return_mean=100"]).unwrap_err();
    assert!(
        error.contains("stop.evaluation_return_mean: needs evaluation.interval of at least 1"),
        "{error}"
    );
    assert!(parse(
        bc,
        &["stop.evaluation_return_mean=100", "evaluation.interval=2"]
    )
    .is_ok());
    // MARWIL takes BC's keys and its own; BC takes none of MARWIL's.
    let marwil = bc.replace("algorithm: BC", "algorithm: MARWIL");
    assert!(parse(&marwil, &["training.beta=0.5", "training.vf_coeff=2"]).is_ok());
    let error = parse(&marwil, &["training.beta=-1"]).unwrap_err();
    assert!(
        error.contains("training.beta: must not be negative"),
        "{error}"
    );
    let error = parse(
        &marwil,
        &["training.moving_average_sqd_adv_norm_update_rate=2"],
    )
    .unwrap_err();
    assert!(
        error.contains("training.moving_average_sqd_adv_norm_update_rate: must be within [0, 1]"),
        "{error}"
    );
    let error = parse(bc, &["training.beta=1"]).unwrap_err();
    assert!(error.contains("no config key `training.beta`"), "{error}");
}

#[test]
fn override_errors_name_the_assignment() {
    let error = parse(SMALL_PPO, &["training.lrr=1"]).unwrap_err();
    assert!(
        error.contains("--set training.lrr=1: no config key `training.lrr`"),
        "{error}"
    );
    let error = parse(SMALL_PPO, &["training.num_epochs=many"]).unwrap_err();
    assert!(error.contains("--set training.num_epochs=many"), "{error}");
    let error = parse(SMALL_PPO, &["training.lr"]).unwrap_err();
    assert!(error.contains("expected KEY=VALUE"), "{error}");
    // A value out of range names the `--set` it came from, not the line of
    // the file's own value.
    let error = parse(SMALL_PPO, &["training.num_epochs=0"]).unwrap_err();
    assert!(
        error.contains("training.num_epochs: must be at least 1 (--set training.num_epochs=0)")
            && !error.contains("line"),
        "{error}"
    );
    let error = parse(&SMALL_PPO.replace("num_epochs: 2", "num_epochs: 0"), &[]).unwrap_err();
    assert!(error.contains("at line 10"), "{error}");
}

#[test]
fn cli_rejects_bad_input_without_leaving_a_run_directory() {
    let scratch = Scratch::new();
    let missing = scratch.oxray(&["train", "nope.yaml"]);
    assert_clean_error(&missing, &["nope.yaml"]);

    scratch.write("malformed.yaml", "algorithm: PPO\nenv: [CartPole\n");
    assert_clean_error(
        &scratch.oxray(&["train", "malformed.yaml"]),
        &["malformed.yaml", "line"],
    );

    scratch.write(
        "algo.yaml",
        &SMALL_PPO.replace("algorithm: PPO", "algorithm: PPOX"),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "algo.yaml"]),
        &["algorithm", "PPOX"],
    );

    if !tch::Cuda::is_available() {
        scratch.write("gpu.yaml", SMALL_PPO);
        let set = "learners.num_gpus_per_learner=0.5";
        assert_clean_error(
            &scratch.oxray(&["train", "gpu.yaml", "--set", set]),
            &[
                "num_gpus_per_learner is 0.5",
                "no CUDA device",
                "set it to 0",
            ],
        );
        assert!(scratch.runs("gpu").is_empty());
    }

    scratch.write("env.yaml", &SMALL_PPO.replace("CartPole-v1", "CartPol-v1"));
    assert_clean_error(
        &scratch.oxray(&["train", "env.yaml"]),
        &["unknown environment id `CartPol-v1`"],
    );
    // With remote EnvRunners the spaces are read on one of them: the same
    // error comes back from there.
    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "env.yaml",
            "--set",
            "env_runners.num_env_runners=1",
        ]),
        &[
            "unknown environment id `CartPol-v1`",
            "on an EnvRunner's worker",
        ],
    );

    scratch.write("ok.yaml", SMALL_PPO);
    let bad_set = scratch.oxray(&["train", "ok.yaml", "--set", "training.nope=1"]);
    assert_clean_error(&bad_set, &["training.nope"]);

    // More actor CPUs than the embedded node has: they would wait for ever.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = format!("env_runners.num_env_runners={}", cores + 1);
    assert_clean_error(
        &scratch.oxray(&["train", "ok.yaml", "--set", &too_many]),
        &["ask for", "CPUs", "env_runners.num_env_runners"],
    );

    // The same for a Learner actor's CPUs.
    let too_many = format!("learners.num_cpus_per_learner={}", cores + 1);
    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "ok.yaml",
            "--set",
            "learners.num_learners=1",
            "--set",
            &too_many,
        ]),
        &["ask for", "CPUs", "learners.num_cpus_per_learner"],
    );

    assert!(!scratch.path().join("results").exists() || scratch.runs("env").is_empty());
    for name in ["nope", "malformed", "algo", "env", "ok"] {
        assert!(
            scratch.runs(name).is_empty(),
            "run directory left for {name}"
        );
    }
}

/// A Learner runs one libtorch thread per whole CPU it was given (as Ray sets
/// `OMP_NUM_THREADS` from an actor's `num_cpus`), in the driver and as an
/// actor, and says so beside its device.
#[test]
fn a_learner_runs_as_many_torch_threads_as_its_cpus() {
    let scratch = Scratch::new();
    scratch.write("ok.yaml", SMALL_PPO);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let in_actor = cores.min(2);
    for (num_learners, cpus, shown) in [
        (0, 1, "cpu".to_string()),
        (0, 2, "cpu (2 threads)".to_string()),
        (
            1,
            in_actor,
            match in_actor {
                1 => "cpu".to_string(),
                n => format!("cpu ({n} threads)"),
            },
        ),
    ] {
        let output = scratch.oxray(&[
            "train",
            "ok.yaml",
            "--set",
            &format!("learners.num_learners={num_learners}"),
            "--set",
            &format!("learners.num_cpus_per_learner={cpus}"),
            "--set",
            "stop.iterations=1",
        ]);
        let stdout = train_support::stdout(&output);
        assert!(
            output.status.success(),
            "{}",
            train_support::stderr(&output)
        );
        assert!(
            stdout.contains(&format!("learner device: {shown}\n")),
            "{num_learners} Learners of {cpus} CPUs: {stdout}"
        );
    }
}

/// A grid search runs every trial into a directory of its own with its
/// values in params.yaml; a trial that fails does not stop the others, and
/// the sweep then fails with the table showing which one it was.
#[test]
fn a_grid_search_trains_each_trial_and_reports_the_one_that_failed() {
    let scratch = Scratch::new();
    scratch.write(
        "sweep.yaml",
        &SMALL_PPO
            .replace("lr: 1.0e-3", "lr: {grid_search: [1.0e-3, 3.0e-4]}")
            .replace("iterations: 2", "training_iteration: 1"),
    );
    let output = scratch.oxray(&[
        "train",
        "sweep.yaml",
        "--set",
        "env={grid_search: [CartPole-v1, MountainCar-v0]}",
    ]);
    let stdout = train_support::stdout(&output);
    assert!(
        output.status.success(),
        "{}",
        train_support::stderr(&output)
    );
    let runs: Vec<PathBuf> = [
        "0_lr=0.001,env=CartPole-v1",
        "1_lr=0.001,env=MountainCar-v0",
    ]
    .iter()
    .chain(&[
        "2_lr=0.0003,env=CartPole-v1",
        "3_lr=0.0003,env=MountainCar-v0",
    ])
    .map(|trial| {
        let runs = scratch.runs(&format!("sweep/{trial}"));
        assert_eq!(runs.len(), 1, "{trial}: {stdout}");
        runs[0].clone()
    })
    .collect();
    for (run, (lr, env)) in runs.iter().zip([
        ("0.001", "CartPole-v1"),
        ("0.001", "MountainCar-v0"),
        ("0.0003", "CartPole-v1"),
        ("0.0003", "MountainCar-v0"),
    ]) {
        let (config, trained_lr) = run_config(run);
        assert_eq!(config.env.id, env, "{}", run.display());
        assert_eq!(trained_lr, lr.parse::<f64>().unwrap());
        assert!(run.join("checkpoints").join("latest").exists());
    }
    assert_eq!(stdout.matches("TERMINATED").count(), 4, "{stdout}");
    // MountainCar's first 32 steps per env end no episode: no return to rank.
    let best = stdout
        .lines()
        .find_map(|line| line.strip_prefix("best trial by env_runners/episode_return_mean: "))
        .unwrap_or_else(|| panic!("no best trial in {stdout}"));
    assert!(best.contains("env=CartPole-v1) with "), "{best}");

    // An env that cannot be made fails its trials when they start; the
    // others train, and the sweep exits 1 naming how many failed.
    let output = scratch.oxray(&[
        "train",
        "sweep.yaml",
        "--name",
        "half",
        "--set",
        "env={grid_search: [CartPole-v1, no_such_module:Env]}",
    ]);
    let (stdout, stderr) = (
        train_support::stdout(&output),
        train_support::stderr(&output),
    );
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: trial lr=0.001,env=no_such_module:Env: "),
        "{stderr}"
    );
    assert!(stderr.contains("error: 2 of 4 trials failed"), "{stderr}");
    assert_eq!(stdout.matches("TERMINATED").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("ERROR").count(), 2, "{stdout}");
    assert_eq!(scratch.runs("half/0_lr=0.001,env=CartPole-v1").len(), 1);
    assert!(scratch
        .runs("half/1_lr=0.001,env=no_such_module:Env")
        .is_empty());
}

/// Trials that run one after another in one driver each get the bundles
/// of their two Learners: a finished trial's placement group is removed
/// with its Learners, not left reserved until the driver exits.
#[test]
fn trials_one_after_another_each_place_their_learners() {
    let scratch = Scratch::new();
    scratch.write(
        "learners.yaml",
        &SMALL_PPO
            .replace("lr: 1.0e-3", "lr: {grid_search: [1.0e-3, 3.0e-4]}")
            .replace("iterations: 2", "training_iteration: 1"),
    );
    let output = scratch.oxray(&[
        "train",
        "learners.yaml",
        "--set",
        "learners.num_learners=2",
        "--set",
        "learners.num_cpus_per_learner=1",
    ]);
    let stdout = train_support::stdout(&output);
    assert!(
        output.status.success(),
        "{stdout}{}",
        train_support::stderr(&output)
    );
    assert_eq!(stdout.matches("TERMINATED").count(), 2, "{stdout}");
    assert_eq!(
        stdout.matches("learner device: cpu, cpu\n").count(),
        2,
        "{stdout}"
    );
}

/// A value no trial may have is refused before any trial starts, naming
/// the trial, the key and its line; `--resume` takes one run, not a sweep.
#[test]
fn a_grid_search_with_a_bad_trial_starts_none() {
    let scratch = Scratch::new();
    scratch.write(
        "sweep.yaml",
        &SMALL_PPO.replace("lr: 1.0e-3", "lr: {grid_search: [1.0e-3, -1.0]}"),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "sweep.yaml"]),
        &["sweep.yaml", "trial lr=-1.0: training.lr", "line 7"],
    );
    assert!(!scratch.path().join("results").exists());
    scratch.write(
        "good.yaml",
        &SMALL_PPO.replace("lr: 1.0e-3", "lr: {grid_search: [1.0e-3, 1.0e-4]}"),
    );
    assert_clean_error(
        &scratch.oxray(&["train", "good.yaml", "--resume", "results/x"]),
        &["--resume continues one run", "a search of 2 trials"],
    );
}

/// Trials training at once (threads of one driver) learn exactly what they
/// learn one after another: each Learner's initial weights follow from its
/// seed, not from which trial drew from libtorch's generator first.
#[test]
fn concurrent_trials_learn_what_sequential_ones_do() {
    let scratch = Scratch::new();
    scratch.write(
        "sweep.yaml",
        &SMALL_PPO.replace("lr: 1.0e-3", "lr: {grid_search: [1.0e-3, 3.0e-4, 1.0e-4]}"),
    );
    let learned = |name: &str, concurrent: &str| -> Vec<Vec<String>> {
        let output = scratch.oxray(&[
            "train",
            "sweep.yaml",
            "--name",
            name,
            "--max-concurrent-trials",
            concurrent,
        ]);
        let stdout = train_support::stdout(&output);
        assert!(
            output.status.success(),
            "{}",
            train_support::stderr(&output)
        );
        if concurrent != "1" {
            assert!(stdout.contains("[trial 2] done: "), "{stdout}");
        }
        ["0_lr=0.001", "1_lr=0.0003", "2_lr=0.0001"]
            .iter()
            .map(|trial| {
                let run = &scratch.runs(&format!("{name}/{trial}"))[0];
                let returns = progress_column(run, "env_runners/episode_return_mean");
                let loss = progress_column(run, "learners/default_policy/total_loss");
                returns
                    .iter()
                    .zip(&loss)
                    .map(|(returns, loss)| format!("{returns} {loss}"))
                    .collect()
            })
            .collect()
    };
    let one_by_one = learned("sequential", "1");
    assert_eq!(
        one_by_one.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    assert_ne!(one_by_one[0], one_by_one[2], "the learning rates differ");
    assert_eq!(learned("concurrent", "3"), one_by_one);
}

/// `--scheduler` (Ray Tune's ASHA) stops a search's trials early: ranked
/// by env steps sampled (which follow from each trial's batch size alone),
/// with rungs at iterations 2 and 4 and the better half going on, the first
/// trial trains to max_t while the two smaller batches stop at the first
/// rung; a bad scheduler is refused before any trial starts.
#[test]
fn asha_stops_the_trials_below_a_rungs_cutoff() {
    let scratch = Scratch::new();
    scratch.write(
        "sweep.yaml",
        &SMALL_PPO
            .replace(
                "train_batch_size: 256",
                "train_batch_size: {grid_search: [512, 256, 128]}",
            )
            .replace("iterations: 2", "iterations: 20"),
    );
    let output = scratch.oxray(&[
        "train",
        "sweep.yaml",
        "--scheduler",
        "{type: asha, metric: num_env_steps_sampled_lifetime, grace_period: 2, max_t: 8, reduction_factor: 2}",
    ]);
    let stdout = train_support::stdout(&output);
    assert!(
        output.status.success(),
        "{}",
        train_support::stderr(&output)
    );
    let iterations: Vec<usize> = [
        "0_train_batch_size=512",
        "1_train_batch_size=256",
        "2_train_batch_size=128",
    ]
    .iter()
    .map(|trial| {
        let run = &scratch.runs(&format!("sweep/{trial}"))[0];
        let csv = std::fs::read_to_string(run.join("progress.csv")).unwrap();
        csv.lines().count() - 1
    })
    .collect();
    assert_eq!(iterations, [8, 2, 2], "{stdout}");
    assert!(
        stdout.contains("training_iteration 8 reached max_t 8 (ASHA)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "num_env_steps_sampled_lifetime 512 is outside the best 1/2 at training_iteration 2 (cutoff 1024; ASHA)"
        ),
        "{stdout}"
    );

    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "sweep.yaml",
            "--scheduler",
            "{type: asha, reduction_factor: 1}",
        ]),
        &["--scheduler: reduction_factor must be above 1"],
    );
    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "sweep.yaml",
            "--name",
            "x",
            "--scheduler",
            "hyperband",
        ]),
        &["--scheduler: unknown scheduler `hyperband`"],
    );
    assert_eq!(scratch.runs("x").len(), 0);
}

/// `--scheduler` with Ray Tune's population based training, from the
/// command line: two trials at once, ranked every iteration by the env
/// steps each samples per iteration (its batch size, so the ranking does
/// not depend on learning). The top trial is never cloned; whether the
/// bottom one clones it depends on the two threads' timing (it may finish
/// before the top one's first checkpoint is saved; `trainers/tests/
/// population.rs` fixes the order), and if it does, once, its printed line,
/// the trials' table, its params history and progress agree; resumed, each
/// trial goes on with its run's config. One trial at a time (with a
/// warning), no trial is ranked against another. A mutation
/// the config has no key for, and a population of one, are refused before
/// any trial starts.
#[test]
fn pbt_clones_the_better_trial_with_perturbed_hyperparameters() {
    let scratch = Scratch::new();
    scratch.write(
        "population.yaml",
        &SMALL_PPO
            .replace(
                "train_batch_size: 256",
                "train_batch_size: {grid_search: [256, 128]}",
            )
            .replace("iterations: 2", "iterations: 30"),
    );
    let pbt = "{type: pbt, time_attr: training_iteration, metric: \
        env_runners/num_env_steps_sampled, perturbation_interval: 1, quantile_fraction: 0.5, \
        resample_probability: 0, hyperparam_mutations: {training.lr: [5.0e-4, 1.0e-3, 2.0e-3]}}";
    let output = scratch.oxray(&[
        "train",
        "population.yaml",
        "--max-concurrent-trials",
        "2",
        "--scheduler",
        pbt,
    ]);
    let stdout = train_support::stdout(&output);
    assert!(
        output.status.success(),
        "{}",
        train_support::stderr(&output)
    );
    let run = |trial: &str| scratch.runs(&format!("population/{trial}"))[0].clone();
    let params = |path: PathBuf| -> (usize, f64) {
        let config =
            ExperimentConfig::parse(&std::fs::read_to_string(&path).unwrap(), "params", &[])
                .unwrap();
        match config.training {
            AlgorithmConfig::Ppo(ppo) => (ppo.train_batch_size, ppo.lr),
            other => panic!("a PPO trial saved {other:?}"),
        }
    };
    let earlier_params = |run: &PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(run)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("params_")
            })
            .collect()
    };
    // Per row: env steps sampled, learning rate.
    let progress = |run: &PathBuf| -> Vec<(f64, f64)> {
        let values = |key: &str| -> Vec<f64> {
            let column = progress_column(run, key);
            column.iter().map(|value| value.parse().unwrap()).collect()
        };
        let steps = values("env_runners/num_env_steps_sampled");
        let lr = values("learners/default_policy/default_optimizer_learning_rate");
        steps.into_iter().zip(lr).collect()
    };

    let top = run("0_train_batch_size=256");
    assert_eq!(params(top.join("params.yaml")), (256, 1e-3));
    assert_eq!(progress(&top), vec![(256.0, 1e-3); 30]);
    assert!(
        earlier_params(&top).is_empty(),
        "the top trial was never cloned"
    );

    let bottom = run("1_train_batch_size=128");
    let clones: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("clones trial"))
        .collect();
    let rows = progress(&bottom);
    match clones[..] {
        [] => {
            assert!(earlier_params(&bottom).is_empty());
            assert_eq!(rows, vec![(128.0, 1e-3); 30]);
            assert!(stdout.contains("  train_batch_size=128  ("), "{stdout}");
        }
        [clone] => {
            assert!(
                clone.starts_with("[trial 1] clones trial 0 as of training_iteration ")
                    && clone
                        .contains(" (env_runners/num_env_steps_sampled 128 below its 256; PBT): "),
                "{clone}"
            );
            let (new_lr, tag) = if clone.ends_with("; PBT): training.lr 0.001 -> 0.0005") {
                (5e-4, "5.000e-4")
            } else {
                assert!(
                    clone.ends_with("; PBT): training.lr 0.001 -> 0.002"),
                    "{clone}"
                );
                (2e-3, "2.000e-3")
            };
            // The trials' table shows the values PBT gave, as Tune's tags do.
            assert!(
                stdout.contains(&format!("  train_batch_size=128@perturbed[lr={tag}]  (")),
                "{stdout}"
            );
            assert_eq!(params(bottom.join("params.yaml")), (256, new_lr));
            let earlier = earlier_params(&bottom);
            assert_eq!(earlier.len(), 1, "{earlier:?}");
            assert_eq!(params(earlier[0].clone()), (128, 1e-3));
            let switch = rows.iter().position(|&(steps, _)| steps == 256.0).unwrap();
            assert!(rows[..switch].iter().all(|&row| row == (128.0, 1e-3)));
            assert!(rows[switch..].iter().all(|&row| row == (256.0, new_lr)));
        }
        _ => panic!("tied after one clone, the trials clone no more: {stdout}"),
    }

    // Resumed with further to go, each trial trains on with the config its
    // run last trained with (a clone's is its donor's, explored).
    let before = [
        params(top.join("params.yaml")),
        params(bottom.join("params.yaml")),
    ];
    let output = scratch.oxray(&[
        "train",
        "population.yaml",
        "--max-concurrent-trials",
        "2",
        "--scheduler",
        pbt,
        "--resume",
        "auto",
        "--set",
        "stop.iterations=32",
    ]);
    assert!(
        output.status.success(),
        "{}",
        train_support::stderr(&output)
    );
    for (run, before) in [&top, &bottom].into_iter().zip(before) {
        assert_eq!(params(run.join("params.yaml")), before);
        let iterations = progress_column(run, "training_iteration");
        assert_eq!(iterations.last().map(String::as_str), Some("32"));
    }

    // One trial at a time, each is ranked alone, and none clones.
    let output = scratch.oxray(&[
        "train",
        "population.yaml",
        "--name",
        "sequential",
        "--scheduler",
        pbt,
    ]);
    assert!(
        output.status.success(),
        "{}",
        train_support::stderr(&output)
    );
    assert!(
        train_support::stderr(&output).contains(
            "warning: population based training ranks the trials that train at the same time: \
             with --max-concurrent-trials 1 of 2 trials"
        ),
        "{}",
        train_support::stderr(&output)
    );
    assert!(!train_support::stdout(&output).contains("clones trial"));

    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "population.yaml",
            "--name",
            "x",
            "--scheduler",
            "{type: pbt, hyperparam_mutations: {training.lrr: [1.0e-3]}}",
        ]),
        &["--scheduler: hyperparam_mutations: training.lrr: is not a key of the config"],
    );
    scratch.write("one.yaml", SMALL_PPO);
    assert_clean_error(
        &scratch.oxray(&[
            "train",
            "one.yaml",
            "--name",
            "x",
            "--scheduler",
            "{type: pbt, hyperparam_mutations: {training.lr: [1.0e-3]}}",
        ]),
        &["needs a population", "this one has 1"],
    );
    assert_eq!(scratch.runs("x").len(), 0);
}

/// `--num-samples` repeats the search space, drawing each distribution
/// anew per trial; `--search-seed` makes a search repeatable.
#[test]
fn sampled_trials_draw_their_values_and_the_search_seed_repeats_them() {
    let scratch = Scratch::new();
    scratch.write(
        "search.yaml",
        &SMALL_PPO
            .replace("lr: 1.0e-3", "lr: {loguniform: [1.0e-4, 1.0e-2]}")
            .replace("iterations: 2", "iterations: 1"),
    );
    let drawn_lrs = |name: &str, seed: &str| -> Vec<f64> {
        let output = scratch.oxray(&[
            "train",
            "search.yaml",
            "--name",
            name,
            "--num-samples",
            "3",
            "--search-seed",
            seed,
        ]);
        assert!(
            output.status.success(),
            "{}",
            train_support::stderr(&output)
        );
        let trials = std::fs::read_dir(scratch.path().join("results").join(name))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned());
        let mut trials: Vec<String> = trials.collect();
        trials.sort();
        trials
            .iter()
            .map(|trial| {
                let run = &scratch.runs(&format!("{name}/{trial}"))[0];
                run_config(run).1
            })
            .collect()
    };
    let first = drawn_lrs("first", "5");
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().all(|lr| (1e-4..1e-2).contains(lr)),
        "{first:?}"
    );
    assert!(first[0] != first[1] && first[1] != first[2], "{first:?}");
    assert_eq!(drawn_lrs("again", "5"), first);
    assert_ne!(drawn_lrs("other", "6"), first);
}

/// The config a run directory's params.yaml holds, with its PPO lr.
fn run_config(run: &std::path::Path) -> (ExperimentConfig, f64) {
    let params = std::fs::read_to_string(run.join("params.yaml")).unwrap();
    let config = ExperimentConfig::parse(&params, "params.yaml", &[]).unwrap();
    let lr = match &config.training {
        AlgorithmConfig::Ppo(training) => training.lr,
        other => panic!("a PPO run's params.yaml holds {other:?}"),
    };
    (config, lr)
}
