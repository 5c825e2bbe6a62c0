//! The request flow: what to do with a request, a callback, a token response.
