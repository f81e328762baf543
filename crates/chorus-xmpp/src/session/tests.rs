//! Unit tests of the session state machine with in-memory seams.
