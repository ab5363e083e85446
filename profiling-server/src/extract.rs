//! The extractors of the handlers: axum's `Query` and `Path` whose rejections are
//! [`ApiError`]s (400 with a JSON body), derived once here instead of mapped in every handler.

use axum::extract::FromRequestParts;

use crate::error::ApiError;

/// `axum::extract::Query`, rejecting with [`ApiError::BadRequest`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// `axum::extract::Path`, rejecting with [`ApiError::BadRequest`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);
