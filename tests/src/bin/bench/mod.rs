pub mod broadcast;
pub mod cdc;
pub mod changes;
