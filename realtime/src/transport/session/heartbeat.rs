//! `heartbeat` on topic `phoenix`: answered at once with an ok reply. Any frame keeps the
//! socket alive; realtime-js sends a heartbeat every 25 s.

use super::Session;
use crate::protocol::phoenix::{Inbound, Status};

impl Session {
    pub(super) fn heartbeat(&self, msg: &Inbound) {
        self.reply(msg, Status::Ok, "{}");
    }
}
