//! Redis key layout. Every key of one campaign carries the campaign id as its
//! hash tag, so on Redis Cluster a campaign lives in one slot and the issue
//! script can check and write all of it atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:coupon:{C}:state` | hash | total, limit, start/end (ms), remaining, seq (last issued), secret, sold_out (ms), reported, run (id of the Redis server run it was last confirmed against the durable records in) |
//! | `<p>:coupon:{C}:users` | hash | user → that user's codes, space-separated, in issue order |
//! | `<p>:coupon:{C}:req` | hash | request id → "user\ncode\nremaining" of the ISSUED answer it got |
//! | `<p>:coupon:{C}:log` | stream | one entry per issuance (seq, user, code, request, at); consumer group `persist` |
//! | `<p>:coupon:{C}:rebuild` | string | the rebuild lock (a token), while one instance restores the state |
//!
//! Every per-campaign key is bounded by the campaign's stock: only ISSUED
//! answers are remembered, and the log is trimmed once persisted.

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}:coupon:"),
        }
    }

    fn campaign(&self, campaign: &str, what: &str) -> String {
        format!("{}{{{campaign}}}:{what}", self.prefix)
    }

    pub fn state(&self, campaign: &str) -> String {
        self.campaign(campaign, "state")
    }

    pub fn users(&self, campaign: &str) -> String {
        self.campaign(campaign, "users")
    }

    pub fn requests(&self, campaign: &str) -> String {
        self.campaign(campaign, "req")
    }

    pub fn log(&self, campaign: &str) -> String {
        self.campaign(campaign, "log")
    }

    pub fn rebuild_lock(&self, campaign: &str) -> String {
        self.campaign(campaign, "rebuild")
    }

    /// The campaign of a log key.
    pub fn campaign_of_log<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_campaigns_keys_share_a_hash_tag() {
        let k = Keys::new("tm");
        for key in [
            k.state("sale"),
            k.users("sale"),
            k.requests("sale"),
            k.log("sale"),
            k.rebuild_lock("sale"),
        ] {
            assert!(key.starts_with("tm:coupon:{sale}:"), "{key}");
        }
        assert_eq!(k.campaign_of_log(&k.log("a.b")), Some("a.b"));
        assert_eq!(k.campaign_of_log("tm:coupon:{x}:state"), None);
    }
}
