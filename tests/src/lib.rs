//! Fixtures for the kernel tests that know xipsec's types: an independent ESP decryptor, frame
//! builders, random SPDs and packets biased to policy edges, the reference verdict (the model's
//! parser and reference classifier) and what the kernel's maps mean. Namespaces, veths,
//! daemons, captures and the root rule come from the workspace's one test kit, `xipsec_testkit`.

pub mod args;
pub mod esp_oracle;
pub mod frames;
pub mod killed;
pub mod maps;
pub mod random;
pub mod reference;
pub mod transport;
