//! Renderers: a finished [`crate::profile::Profile`] to a file format.
