//! Alarms in the replicated state (etcd's NOSPACE and CORRUPT): raised and cleared by applying
//! log entries, so every member refuses the same requests from the same index on.

use std::sync::atomic::{AtomicU8, Ordering};

use redb::ReadableTable;

use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, alarm_request::AlarmAction,
};
use crate::proto::kvserverpb::internal_request::Request;
use crate::storage::error::{KvError, StoreError};

use super::write::Writer;

/// Which kinds of alarm are raised (by any member), as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveAlarms(u8);

impl ActiveAlarms {
    const NOSPACE: u8 = 1;
    const CORRUPT: u8 = 2;

    pub(crate) fn of<'a>(alarms: impl IntoIterator<Item = &'a AlarmMember>) -> Self {
        let mut bits = 0;
        for a in alarms {
            bits |= match AlarmType::try_from(a.alarm) {
                Ok(AlarmType::Nospace) => Self::NOSPACE,
                Ok(AlarmType::Corrupt) => Self::CORRUPT,
                _ => 0,
            };
        }
        Self(bits)
    }

    pub fn nospace(self) -> bool {
        self.0 & Self::NOSPACE != 0
    }

    pub fn corrupt(self) -> bool {
        self.0 & Self::CORRUPT != 0
    }

    /// What an applied request is refused with while these alarms are raised (etcd's capped
    /// and corrupt appliers): under CORRUPT every key-space and lease request, under NOSPACE
    /// the ones that can add data (puts, transactions that put, lease grants).
    pub(crate) fn refusal(self, request: &Request) -> Option<KvError> {
        if self.corrupt() {
            return match request {
                Request::Put(_)
                | Request::DeleteRange(_)
                | Request::Txn(_)
                | Request::Compaction(_)
                | Request::LeaseGrant(_)
                | Request::LeaseRevoke(_) => Some(KvError::Corrupt),
                _ => None,
            };
        }
        if self.nospace() {
            return match request {
                Request::Put(_) | Request::LeaseGrant(_) => Some(KvError::NoSpace),
                Request::Txn(t) if super::validate::txn_puts(t) => Some(KvError::NoSpace),
                _ => None,
            };
        }
        None
    }
}

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
