//! What both reconcilers share: server-side apply against the stores ([`apply`]), the frame of
//! a reconcile with its finalizer and backoff ([`reconcile`]), and the pod every workload the
//! operator builds is made of ([`pod`]). Error → condition reason and metric label live on the
//! crate's one error type ([`crate::Error::reason`], [`crate::Error::metric_label`]).

pub mod apply;
pub mod pod;
pub mod reconcile;
