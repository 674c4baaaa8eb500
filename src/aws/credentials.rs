//! The credentials a step gets (helper B implements).
