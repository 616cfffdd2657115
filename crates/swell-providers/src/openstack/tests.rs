//! Tests with a fake cloud serving responses recorded from the real one.
