//! What one apply means beyond the keys it wrote, for the layers that act on it: the alarms
//! in force after it (which requests are refused) and the lease changes the lessor must hear
//! of. Plain values, so that the writer and the alarm and lease tables it drives all depend
//! on them and not on each other.

use crate::proto::etcdserverpb::{AlarmMember, AlarmType};
use crate::proto::kvserverpb::internal_request::Request;
use crate::storage::error::KvError;

/// Which kinds of alarm are raised (by any member), as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveAlarms(pub(super) u8);

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

/// What an apply did to the leases, told to the lessor once the apply is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Granted {
        id: i64,
        ttl: i64,
    },
    Revoked {
        id: i64,
    },
    Checkpointed {
        id: i64,
        remaining_ttl: i64,
    },
    /// The whole lease table was replaced (a snapshot was installed): read it again.
    Reset,
}
