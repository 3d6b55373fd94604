//! The pages through the router.
