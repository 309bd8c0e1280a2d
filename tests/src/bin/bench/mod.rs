pub mod broadcast;
pub mod cdc;
