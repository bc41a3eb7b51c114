//! hyper on wq: see below.
