//! Where a change sits in the stream: the epoch of an unbroken history and the position of one
//! change inside it, with the text form clients send back to resume.

use std::fmt;

use crate::lsn::Lsn;

/// Identifies one unbroken history of the stream. It changes whenever continuity breaks (a new
/// slot, a different database system), so a position from another epoch is never trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a change sits: its transaction's commit LSN plus its index inside that transaction.
/// The commit LSN alone is not enough (a transaction holds many changes) and the change's own WAL
/// LSN is wrong (interleaved transactions make it non-monotonic), so this pair is the total order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: Epoch,
    pub commit_lsn: Lsn,
    pub index: u32,
}

impl Position {
    /// The position a row read from a snapshot carries: LSN zero, which no commit has, so it is
    /// never taken for a change of the stream (resuming from it is refused as outside the
    /// window). `index` numbers the snapshot's rows.
    pub fn snapshot_row(epoch: Epoch, index: u32) -> Position {
        Position {
            epoch,
            commit_lsn: Lsn::ZERO,
            index,
        }
    }

    /// Whether this is the position of a snapshot row (see [`Position::snapshot_row`]).
    pub fn is_snapshot_row(&self) -> bool {
        self.commit_lsn == Lsn::ZERO
    }

    /// Orders positions of one epoch; positions of different epochs are not comparable.
    pub fn cmp_in_epoch(&self, other: &Position) -> Option<std::cmp::Ordering> {
        (self.epoch == other.epoch)
            .then(|| (self.commit_lsn, self.index).cmp(&(other.commit_lsn, other.index)))
    }
}

impl Position {
    /// Length of the text form: 16 + 1 + 16 + 1 + 8 hex digits and dashes.
    const TEXT_LEN: usize = 42;

    /// The text form, `{epoch:016x}-{commit_lsn:016X}-{index:08X}`, without `fmt` machinery:
    /// it is written once per event on the hot path.
    pub(super) fn text(&self) -> [u8; Self::TEXT_LEN] {
        const LOWER: &[u8; 16] = b"0123456789abcdef";
        const UPPER: &[u8; 16] = b"0123456789ABCDEF";
        fn hex(out: &mut [u8], value: u64, digits: &[u8; 16]) {
            let mut v = value;
            for slot in out.iter_mut().rev() {
                *slot = digits[(v & 0xf) as usize];
                v >>= 4;
            }
        }
        let mut buf = [b'-'; Self::TEXT_LEN];
        hex(&mut buf[..16], self.epoch.0, LOWER);
        hex(&mut buf[17..33], self.commit_lsn.0, UPPER);
        hex(&mut buf[34..], u64::from(self.index), UPPER);
        buf
    }
}

/// Why a position's text form was refused. Messages describe the text without repeating it (it
/// comes from clients and may be anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParsePositionError {
    #[error(
        "a position is 42 characters, <epoch>-<commit LSN>-<index> with 16, 16 and 8 hex digits; got {0} characters"
    )]
    Length(usize),
    #[error(
        "a position is <epoch>-<commit LSN>-<index> with 16, 16 and 8 hex digits; character {0} is not what that form has there"
    )]
    Character(usize),
}

impl std::str::FromStr for Position {
    type Err = ParsePositionError;

    /// Reads the text form written by `Display`; hex digits in either case.
    fn from_str(s: &str) -> Result<Position, ParsePositionError> {
        let bytes = s.as_bytes();
        if bytes.len() != Self::TEXT_LEN {
            return Err(ParsePositionError::Length(s.chars().count()));
        }
        let hex = |range: std::ops::Range<usize>| -> Result<u64, ParsePositionError> {
            let mut value = 0u64;
            for i in range {
                let digit = (bytes[i] as char)
                    .to_digit(16)
                    .ok_or(ParsePositionError::Character(i + 1))?;
                value = (value << 4) | u64::from(digit);
            }
            Ok(value)
        };
        for dash in [16, 33] {
            if bytes[dash] != b'-' {
                return Err(ParsePositionError::Character(dash + 1));
            }
        }
        Ok(Position {
            epoch: Epoch(hex(0..16)?),
            commit_lsn: Lsn(hex(17..33)?),
            // Eight hex digits always fit.
            index: hex(34..42)? as u32,
        })
    }
}

impl fmt::Display for Position {
    /// Fixed-width hex, so that within one epoch the strings sort as the positions do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // Only ASCII hex digits and dashes were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_as_fixed_width_hex() {
        let p = Position {
            epoch: Epoch(0xab),
            commit_lsn: Lsn(0x016b_374c),
            index: 0x2f,
        };
        assert_eq!(p.to_string(), "00000000000000ab-00000000016B374C-0000002F");
        let max = Position {
            epoch: Epoch(u64::MAX),
            commit_lsn: Lsn(u64::MAX),
            index: u32::MAX,
        };
        assert_eq!(max.to_string(), "ffffffffffffffff-FFFFFFFFFFFFFFFF-FFFFFFFF");
    }

    #[test]
    fn positions_parse_back_from_their_text_and_refuse_anything_else() {
        for p in [
            Position {
                epoch: Epoch(0xab),
                commit_lsn: Lsn(0x016b_374c),
                index: 0x2f,
            },
            Position {
                epoch: Epoch(u64::MAX),
                commit_lsn: Lsn(u64::MAX),
                index: u32::MAX,
            },
            Position {
                epoch: Epoch(0),
                commit_lsn: Lsn(0),
                index: 0,
            },
        ] {
            assert_eq!(p.to_string().parse::<Position>(), Ok(p));
            assert_eq!(p.to_string().to_lowercase().parse::<Position>(), Ok(p));
        }
        let good = "00000000000000ab-00000000016B374C-0000002F";
        assert_eq!("".parse::<Position>(), Err(ParsePositionError::Length(0)));
        assert_eq!(good[1..].parse::<Position>(), Err(ParsePositionError::Length(41)));
        assert_eq!(
            good.replace('-', "_").parse::<Position>(),
            Err(ParsePositionError::Character(17))
        );
        assert_eq!(
            good.replacen('F', "g", 1).parse::<Position>(),
            Err(ParsePositionError::Character(42))
        );
        assert_eq!(
            format!("+{}", &good[1..]).parse::<Position>(),
            Err(ParsePositionError::Character(1))
        );
        // Multi-byte characters of the right byte length are refused, never sliced.
        let wide = format!("é{}", &good[2..]);
        assert_eq!(wide.len(), 42);
        assert!(wide.parse::<Position>().is_err());
        assert!(
            !ParsePositionError::Character(3).to_string().contains(good),
            "errors never echo the input"
        );
    }

    #[test]
    fn positions_sort_as_strings_within_an_epoch() {
        let p = |lsn: u64, index: u32| Position {
            epoch: Epoch(7),
            commit_lsn: Lsn(lsn),
            index,
        };
        let list = [
            p(1, 0),
            p(1, 1),
            p(1, 10),
            p(0x1_0000_0000, 0),
            p(u64::MAX, u32::MAX),
        ];
        for w in list.windows(2) {
            assert!(w[0].to_string() < w[1].to_string(), "{} !< {}", w[0], w[1]);
            assert_eq!(w[0].cmp_in_epoch(&w[1]), Some(std::cmp::Ordering::Less));
        }
        let other = Position {
            epoch: Epoch(8),
            ..p(1, 0)
        };
        assert_eq!(p(1, 0).cmp_in_epoch(&other), None);
    }
}
