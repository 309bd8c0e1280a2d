//! The `cdc` benchmark.

pub fn main() -> anyhow::Result<()> {
    anyhow::bail!("the cdc benchmark is not written yet")
}
