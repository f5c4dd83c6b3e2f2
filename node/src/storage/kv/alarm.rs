//! Alarms in the replicated state (etcd's NOSPACE and CORRUPT): raised and cleared by applying
//! log entries, so every member refuses the same requests from the same index on.

use std::sync::atomic::{AtomicU8, Ordering};

use redb::ReadableTable;

use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, alarm_request::AlarmAction,
};
use crate::storage::error::StoreError;

use super::effects::ActiveAlarms;
use super::write::Writer;

/// The raised alarm kinds, shared between the applying thread and the API (which refuses
/// reads under CORRUPT without reading the table).
#[derive(Debug, Default)]
pub(crate) struct AlarmState(AtomicU8);

impl AlarmState {
    pub(crate) fn get(&self) -> ActiveAlarms {
        ActiveAlarms(self.0.load(Ordering::Acquire))
    }

    pub(crate) fn set(&self, alarms: ActiveAlarms) {
        self.0.store(alarms.0, Ordering::Release);
    }
}

impl Writer<'_> {
    /// Applies an alarm request: ACTIVATE raises (answers the alarm if it was not raised
    /// yet), DEACTIVATE clears (answers it if it was raised), GET lists, as etcd's apply does.
    pub(crate) fn alarm(&mut self, req: &AlarmRequest) -> Result<AlarmResponse, StoreError> {
        let member = AlarmMember { member_id: req.member_id, alarm: req.alarm };
        let key = (req.member_id, req.alarm);
        let mut changed = Vec::new();
        match req.action() {
            AlarmAction::Get => return Ok(AlarmResponse { header: None, alarms: self.alarm_list()? }),
            AlarmAction::Activate => {
                if req.alarm != AlarmType::None as i32 && self.alarms.insert(key, ())?.is_none() {
                    changed.push(member);
                }
            }
            AlarmAction::Deactivate => {
                if self.alarms.remove(key)?.is_some() {
                    changed.push(member);
                }
            }
        }
        self.active_alarms = ActiveAlarms::of(&self.alarm_list()?);
        Ok(AlarmResponse { header: None, alarms: changed })
    }

    pub(crate) fn alarm_list(&self) -> Result<Vec<AlarmMember>, StoreError> {
        let mut out = Vec::new();
        for item in self.alarms.iter()? {
            let (k, _) = item?;
            let (member_id, alarm) = k.value();
            out.push(AlarmMember { member_id, alarm });
        }
        Ok(out)
    }
}
