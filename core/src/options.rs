//! Per-call options for tasks and actors, named as Ray names them.
//!
//! The generated `options()` builders of remote functions and actor types wrap
//! these structs and forward the setters (see the `__*_option_setters` macros),
//! so `add::options().num_cpus(0.5).remote(1, 2)` reads as Ray's
//! `add.options(num_cpus=0.5).remote(1, 2)`.

use crate::resources::{ResourceSet, SchedulingStrategy, CPU, GPU, MEMORY};

/// Options of a stateless task.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    pub resources: ResourceSet,
    pub scheduling_strategy: SchedulingStrategy,
    /// Retries when the worker process dies (Ray's default is 3).
    pub max_retries: u32,
    /// Also retry when the function returns an error or panics.
    pub retry_exceptions: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        let mut resources = ResourceSet::default();
        resources.set(CPU, 1.0);
        TaskOptions {
            resources,
            scheduling_strategy: SchedulingStrategy::Default,
            max_retries: 3,
            retry_exceptions: false,
        }
    }
}

/// Options of an actor.
#[derive(Debug, Clone, Default)]
pub struct ActorOptions {
    /// Held for the actor's whole life. Like Ray's effective default, an actor
    /// asks for no CPU unless told, so many light actors fit on a small node.
    pub resources: ResourceSet,
    pub scheduling_strategy: SchedulingStrategy,
    pub max_restarts: u32,
    pub max_task_retries: u32,
    pub name: Option<String>,
    pub get_if_exists: bool,
    pub lifetime: Lifetime,
    /// Calls run at once on the actor's worker (default 1, or 1000 for an
    /// async actor, as in Ray). Above 1 an actor without `async fn` methods
    /// runs each on its own thread (Ray's threaded actors) and its type must
    /// be `Sync`: its `&self` methods then run side by side, in no set
    /// order, while a `&mut self` method waits for the running calls and
    /// runs alone. An async actor's calls take turns on one thread.
    pub max_concurrency: Option<u32>,
}

/// How long an actor lives (Ray's `lifetime=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// Ends with the job that created it (when its driver exits).
    #[default]
    NonDetached,
    /// Outlives its job until killed; must be named, and any job of the same
    /// namespace finds it with `get_actor`.
    Detached,
}

macro_rules! resource_setters {
    () => {
        /// CPUs to reserve; fractions allowed.
        pub fn num_cpus(mut self, amount: f64) -> Self {
            self.resources.set(CPU, amount);
            self
        }

        /// GPUs to reserve; the worker sees the granted ids in
        /// `CUDA_VISIBLE_DEVICES`.
        pub fn num_gpus(mut self, amount: f64) -> Self {
            self.resources.set(GPU, amount);
            self
        }

        /// Bytes of memory to reserve.
        pub fn memory(mut self, bytes: f64) -> Self {
            self.resources.set(MEMORY, bytes);
            self
        }

        /// A custom resource, e.g. `resource("accelerator_slot", 1.0)`.
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.resources.set(name, amount);
            self
        }

        /// Where to run: `Default` (pack, then spread), `Spread`, or
        /// `NodeAffinity` to one node (hard or soft).
        pub fn scheduling_strategy(mut self, strategy: SchedulingStrategy) -> Self {
            self.scheduling_strategy = strategy;
            self
        }
    };
}

impl TaskOptions {
    resource_setters!();

    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    pub fn retry_exceptions(mut self, retry: bool) -> Self {
        self.retry_exceptions = retry;
        self
    }
}

impl ActorOptions {
    resource_setters!();

    pub fn max_restarts(mut self, restarts: u32) -> Self {
        self.max_restarts = restarts;
        self
    }

    pub fn max_task_retries(mut self, retries: u32) -> Self {
        self.max_task_retries = retries;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn get_if_exists(mut self, get_if_exists: bool) -> Self {
        self.get_if_exists = get_if_exists;
        self
    }

    /// `Lifetime::Detached` keeps a named actor after its job ends.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How many calls the actor runs at once (see the field).
    pub fn max_concurrency(mut self, calls: u32) -> Self {
        self.max_concurrency = Some(calls);
        self
    }
}

/// Forwards the [`TaskOptions`] setters on a generated `options()` builder
/// (a tuple struct whose field 0 is the options).
#[doc(hidden)]
#[macro_export]
macro_rules! __task_option_setters {
    () => {
        $crate::__forward_setters!(
            num_cpus(f64),
            num_gpus(f64),
            memory(f64),
            max_retries(u32),
            retry_exceptions(bool),
            scheduling_strategy($crate::SchedulingStrategy)
        );
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.0 = self.0.resource(name, amount);
            self
        }
    };
}

/// Forwards the [`ActorOptions`] setters, like [`__task_option_setters`].
#[doc(hidden)]
#[macro_export]
macro_rules! __actor_option_setters {
    () => {
        $crate::__forward_setters!(
            num_cpus(f64),
            num_gpus(f64),
            memory(f64),
            max_restarts(u32),
            max_task_retries(u32),
            get_if_exists(bool),
            lifetime($crate::Lifetime),
            max_concurrency(u32),
            name(impl Into<String>),
            scheduling_strategy($crate::SchedulingStrategy)
        );
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.0 = self.0.resource(name, amount);
            self
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __forward_setters {
    ($($setter:ident($ty:ty)),* $(,)?) => {
        $(
            pub fn $setter(mut self, value: $ty) -> Self {
                self.0 = self.0.$setter(value);
                self
            }
        )*
    };
}
