//! A campaign as the domain sees it, its defaults and validation rules.

use serde::{Deserialize, Serialize};
use tickmesh_core::FieldViolation;
use tickmesh_core::ids::check_symbol;

/// Most coupons one campaign may hand out (its Redis keys and its rebuild
/// are proportional to the stock).
pub const MAX_STOCK: i64 = 100_000_000;
/// Most coupons one user may hold in a campaign.
pub const MAX_PER_USER: i32 = 1000;
const MAX_DISPLAY_NAME: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    pub total_stock: i64,
    pub per_user_limit: u32,
    /// Milliseconds since the epoch (issuance is gated at millisecond precision).
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub ranking_board_id: String,
    pub create_ms: i64,
    /// Per-campaign key of the coupon codes (hex); never leaves the server.
    pub secret: String,
}

/// A campaign as a client sends it.
#[derive(Clone, Debug, Default)]
pub struct NewCampaign {
    pub id: String,
    pub display_name: String,
    pub total_stock: i64,
    pub per_user_limit: i32,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub ranking_board_id: String,
}

impl NewCampaign {
    /// Checks every rule; returns the campaign (without secret and creation
    /// time) or every violation, with fields named under `prefix`.
    pub fn validate(self, prefix: &str) -> Result<Campaign, Vec<FieldViolation>> {
        let mut v = Vec::new();
        let field = |name: &str| format!("{prefix}{name}");
        if let Err(r) = check_symbol(&self.id) {
            v.push(FieldViolation::new(field("id"), r));
        }
        if self.total_stock <= 0 {
            v.push(FieldViolation::new(
                field("total_stock"),
                "must be at least 1",
            ));
        } else if self.total_stock > MAX_STOCK {
            v.push(FieldViolation::new(
                field("total_stock"),
                format!("must be at most {MAX_STOCK}"),
            ));
        }
        let limit = match self.per_user_limit {
            0 => 1,
            n if n < 0 => {
                v.push(FieldViolation::new(
                    field("per_user_limit"),
                    "must not be negative (0 means 1)",
                ));
                1
            }
            n if n > MAX_PER_USER => {
                v.push(FieldViolation::new(
                    field("per_user_limit"),
                    format!("must be at most {MAX_PER_USER}"),
                ));
                1
            }
            n => n as u32,
        };
        if self.start_ms.is_none() {
            v.push(FieldViolation::new(field("start_time"), "is required"));
        }
        if self.end_ms.is_none() {
            v.push(FieldViolation::new(field("end_time"), "is required"));
        }
        if let (Some(start), Some(end)) = (self.start_ms, self.end_ms)
            && end <= start
        {
            v.push(FieldViolation::new(
                field("end_time"),
                "must be after start_time",
            ));
        }
        if !self.ranking_board_id.is_empty()
            && let Err(r) = check_symbol(&self.ranking_board_id)
        {
            v.push(FieldViolation::new(field("ranking_board_id"), r));
        }
        if self.display_name.len() > MAX_DISPLAY_NAME {
            v.push(FieldViolation::new(
                field("display_name"),
                format!("must be at most {MAX_DISPLAY_NAME} bytes"),
            ));
        }
        if !v.is_empty() {
            return Err(v);
        }
        Ok(Campaign {
            id: self.id,
            display_name: self.display_name,
            total_stock: self.total_stock,
            per_user_limit: limit,
            start_ms: self.start_ms.unwrap_or_default(),
            end_ms: self.end_ms.unwrap_or_default(),
            ranking_board_id: self.ranking_board_id,
            create_ms: 0,
            secret: String::new(),
        })
    }
}

impl Campaign {
    /// True when `other` defines the same campaign (creation time and secret aside).
    pub fn same_definition(&self, other: &Campaign) -> bool {
        self.id == other.id
            && self.display_name == other.display_name
            && self.total_stock == other.total_stock
            && self.per_user_limit == other.per_user_limit
            && self.start_ms == other.start_ms
            && self.end_ms == other.end_ms
            && self.ranking_board_id == other.ranking_board_id
    }

    pub fn state_at(&self, now_ms: i64, remaining: i64) -> CampaignState {
        if remaining <= 0 {
            CampaignState::SoldOut
        } else if now_ms < self.start_ms {
            CampaignState::Scheduled
        } else if now_ms >= self.end_ms {
            CampaignState::Ended
        } else {
            CampaignState::Active
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignState {
    Scheduled,
    Active,
    SoldOut,
    Ended,
}

/// 128 random bits, hex: the key of a campaign's coupon codes.
pub fn new_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> NewCampaign {
        NewCampaign {
            id: "sale-1".into(),
            total_stock: 10,
            start_ms: Some(1000),
            end_ms: Some(2000),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_rules() {
        let c = good().validate("campaign.").unwrap();
        assert_eq!(c.per_user_limit, 1);
        let bad = NewCampaign {
            id: "{x}".into(),
            total_stock: 0,
            per_user_limit: -1,
            start_ms: Some(2000),
            end_ms: Some(2000),
            ..Default::default()
        };
        let fields: Vec<String> = bad
            .validate("campaign.")
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "campaign.id",
                "campaign.total_stock",
                "campaign.per_user_limit",
                "campaign.end_time"
            ]
        );
        let negative = NewCampaign {
            total_stock: -5,
            ..good()
        };
        assert!(negative.validate("").is_err());
    }

    #[test]
    fn secrets_are_random() {
        let a = new_secret().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_secret().unwrap());
    }
}
