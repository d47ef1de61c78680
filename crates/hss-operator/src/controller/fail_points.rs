//! Test hooks: the points of the submission protocol where a test stops the operator as if it
//! crashed there. The hook itself is compiled in only with the `fail-points` feature, which
//! only the test kit enables: the operator's binary and image are built without it, where
//! [`FailPoints`] is empty and its calls do nothing.

#[cfg(feature = "fail-points")]
use std::sync::Arc;

#[cfg(feature = "fail-points")]
use futures::future::BoxFuture;

/// Points in the submission protocol where a test can stop the operator as if it crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Budget taken, the attempt record not yet written.
    BeforeRecord,
    AfterRecord,
    AfterPost,
    BeforeIdWrite,
}

/// A hook called at each [`Step`] with the object's name; it may never return, to model a
/// crash at that point (the test then aborts the controller task).
#[cfg(feature = "fail-points")]
pub type FailPoint = Arc<dyn Fn(Step, String) -> BoxFuture<'static, ()> + Send + Sync>;

/// The hooks a controller calls: none unless a test set one (and never without the
/// `fail-points` feature).
#[derive(Clone, Default)]
pub struct FailPoints {
    #[cfg(feature = "fail-points")]
    hook: Option<FailPoint>,
}

impl FailPoints {
    /// Calls `hook` at every [`Step`].
    #[cfg(feature = "fail-points")]
    pub fn new(hook: FailPoint) -> Self {
        Self { hook: Some(hook) }
    }

    /// At `step` of object `name`'s submission.
    pub(crate) async fn at(&self, step: Step, name: String) {
        #[cfg(feature = "fail-points")]
        if let Some(hook) = &self.hook {
            hook(step, name).await;
        }
        #[cfg(not(feature = "fail-points"))]
        let _ = (step, name);
    }
}
