//! Requests that no route takes: 405 with `Allow` when the path exists with other methods, 404 otherwise, both in
//! the API's error format (actix alone answers an empty 404 to both).

use std::sync::LazyLock;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use utoipa::OpenApi;

use super::ApiDoc;
use super::error::ApiError;

/// The page's routes, which the API's spec does not describe.
const PAGE_ROUTES: [&str; 3] = ["/", "/favicon.ico", "/assets/{file}"];

/// Each route's path segments (`{name}` matches any one segment) and its methods, from the spec.
static ROUTES: LazyLock<Vec<(Vec<String>, Vec<Method>)>> = LazyLock::new(|| {
    let spec = ApiDoc::openapi();
    let api = spec.paths.paths.iter().map(|(path, item)| {
        let methods = [(Method::GET, &item.get), (Method::POST, &item.post), (Method::DELETE, &item.delete)];
        (segments(path), methods.into_iter().filter(|(_, operation)| operation.is_some()).map(|(m, _)| m).collect())
    });
    api.chain(PAGE_ROUTES.iter().map(|path| (segments(path), vec![Method::GET]))).collect()
});

fn segments(path: &str) -> Vec<String> {
    path.split('/').map(str::to_string).collect()
}

/// The methods a path is served with, if any route has it.
fn allowed_methods(path: &str) -> Option<&'static [Method]> {
    let asked: Vec<&str> = path.split('/').collect();
    ROUTES.iter().find_map(|(route, methods)| {
        let same_shape = route.len() == asked.len()
            && route
                .iter()
                .zip(&asked)
                .all(|(part, given)| (part.starts_with('{') && !given.is_empty()) || part == given);
        same_shape.then_some(methods.as_slice())
    })
}

pub async fn unrouted(request: HttpRequest) -> HttpResponse {
    // The path as routing saw it (percent-escapes decoded).
    let path = request.match_info().as_str();
    let Some(methods) = allowed_methods(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {path}")).error_response();
    };
    let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let message = format!("{path} takes {allow}, not {}", request.method());
    let mut response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).error_response();
    response.headers_mut().insert(header::ALLOW, allow.parse().expect("method names are header-safe"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_by_shape_with_one_segment_per_parameter() {
        assert_eq!(allowed_methods("/v1/images"), Some(&[Method::POST][..]));
        let image = allowed_methods("/v1/images/abc").unwrap();
        assert!(image.contains(&Method::GET) && image.contains(&Method::DELETE) && image.len() == 2);
        assert_eq!(allowed_methods("/assets/app.js"), Some(&[Method::GET][..]));
        assert_eq!(allowed_methods("/"), Some(&[Method::GET][..]));
        assert_eq!(allowed_methods("/v1/images/abc/def"), None);
        assert_eq!(allowed_methods("/v1/images/"), None);
        assert_eq!(allowed_methods("/nothing"), None);
    }
}
