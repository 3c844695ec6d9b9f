//! The JSON API (`/api/v1`): placeholder until its operations land.

use std::sync::Arc;

use axum::Router;

use super::Console;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
}
