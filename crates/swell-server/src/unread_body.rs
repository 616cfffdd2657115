//! `Connection: close` on an answer sent before the request's body was read to its end.
//!
//! A refusal (401, 403, 404, 413, 415, 429…) is often answered before anything reads the
//! request's body. hyper then drains what has already arrived of that body and, when the
//! rest is still in flight, closes the connection once the answer is written — but the
//! answer may already be on its way without saying so, and a client that reuses the
//! kept-alive connection for its next request finds it closed under it (`hyper`'s
//! `IncompleteMessage`). [`close_if_body_unread`] says it in the answer: an HTTP/1
//! request that carried a body nobody read to its end gets `Connection: close`, so the
//! server closes the connection after the answer and the client never reuses it. A body
//! that was read (a `400` naming a field, any success) keeps the connection alive.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

/// Middleware (outermost on the API's router): passes the request on with its body
/// watched, and marks the answer `Connection: close` when the request carried a body
/// that was not read to its end.
pub(crate) async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || !carries_body(request.headers()) {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let seen = read.clone();
    let request = request.map(|body| {
        let mut data = body.into_data_stream();
        Body::from_stream(futures_util::stream::poll_fn(move |cx| {
            let next = data.poll_next_unpin(cx);
            if let Poll::Ready(None) = next {
                seen.store(true, Ordering::Release);
            }
            next
        }))
    });
    let mut response = next.run(request).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request announces a body: a `Content-Length` above zero (or one that does
/// not parse, which hyper would have refused anyway) or any `Transfer-Encoding`.
fn carries_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers.get(header::CONTENT_LENGTH).is_some_and(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_none_or(|n| n > 0)
    })
}
