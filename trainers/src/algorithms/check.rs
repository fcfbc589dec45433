//! Range checks of `training:` sections: each a condition, the key under
//! `training.` and what is wrong, so errors name the key (and the config
//! loader its line).

/// (holds, key under `training.`, what is wrong)
pub type Check<'a> = (bool, &'a str, &'a str);

/// The first check that does not hold, as (dotted key, message).
pub fn first_failed(checks: &[Check]) -> Result<(), (String, String)> {
    match checks.iter().find(|(ok, ..)| !ok) {
        Some((_, key, message)) => Err((format!("training.{key}"), message.to_string())),
        None => Ok(()),
    }
}

/// The keys every gradient-based algorithm has.
pub fn common(
    lr: f64,
    gamma: f64,
    train_batch_size: usize,
    grad_clip: Option<f64>,
) -> Result<(), (String, String)> {
    first_failed(&[
        (lr > 0.0 && lr.is_finite(), "lr", "must be positive"),
        (
            (0.0..=1.0).contains(&gamma),
            "gamma",
            "must be within [0, 1]",
        ),
        (
            train_batch_size >= 1,
            "train_batch_size",
            "must be at least 1",
        ),
        (
            grad_clip.is_none_or(|c| c > 0.0),
            "grad_clip",
            "must be positive",
        ),
    ])
}
