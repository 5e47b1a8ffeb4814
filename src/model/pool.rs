//! A fixed set of ONNX Runtime sessions of one model file. `Session::run` takes `&mut self`, so each run borrows
//! one session; callers beyond the pool's size wait (they run on blocking threads, never on the async executor).

use std::sync::{Condvar, Mutex};

use ort::session::Session;

pub struct SessionPool {
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
}

impl SessionPool {
    pub fn new(sessions: Vec<Session>) -> Self {
        Self { idle: Mutex::new(sessions), returned: Condvar::new() }
    }

    /// Runs `work` with a session of its own, waiting for one to be free.
    pub fn with_session<R>(&self, work: impl FnOnce(&mut Session) -> R) -> R {
        let session = {
            let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            loop {
                match idle.pop() {
                    Some(session) => break session,
                    None => idle = self.returned.wait(idle).unwrap_or_else(|poisoned| poisoned.into_inner()),
                }
            }
        };
        // Put the session back even if `work` panics, so the pool never shrinks.
        struct GiveBack<'a> {
            pool: &'a SessionPool,
            session: Option<Session>,
        }
        impl Drop for GiveBack<'_> {
            fn drop(&mut self) {
                if let Some(session) = self.session.take() {
                    self.pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(session);
                    self.pool.returned.notify_one();
                }
            }
        }
        let mut guard = GiveBack { pool: self, session: Some(session) };
        work(guard.session.as_mut().expect("the guard holds the session until it drops"))
    }
}
