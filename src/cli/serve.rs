//! `samserve serve`: the HTTP service and its web page (options in `samserve::http::ServeOptions`).

use samserve::http::ServeOptions;
use samserve::model::Runtime;

/// Serves until SIGTERM or Ctrl-C.
pub fn run(runtime: Runtime, options: ServeOptions) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(samserve::http::serve(runtime, options))
}
