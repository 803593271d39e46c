//! Validation of the load-balancing settings of a `DestinationRule`: hash keys, ring and Maglev sizes,
//! locality distribution and failover, zone awareness and slow start.

use super::super::{
    BackendUtilizationLb, ConsistentHashLb, HttpCookie, LoadBalancerSettings, LocalityFailover, LocalityLbSetting,
    WarmupConfiguration, ZoneAwareLbSetting,
};
use super::checks::{ms_duration, syntax_duration};
use crate::{FieldPath, Issues, Validate};

/// Largest `maglev.tableSize` Istio accepts (exclusive).
const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;
/// Largest ring size Envoy accepts for a ring-hash balancer.
const RING_SIZE_MAX: u64 = 8_388_608;
/// Topology labels that `failover` already implies, so they cannot also be listed in `failoverPriority`.
const TOPOLOGY_LABELS: [&str; 3] =
    ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];

impl LoadBalancerSettings {
    /// Validates these settings; `has_outlier_detection` says whether the same policy level ejects
    /// outliers (locality failover does nothing without it).
    pub fn validate_with(&self, path: &FieldPath, has_outlier_detection: bool, issues: &mut Issues) {
        let kinds = [self.simple.is_some(), self.consistent_hash.is_some(), self.backend_utilization.is_some()];
        if kinds.iter().filter(|set| **set).count() > 1 {
            issues.error(path, "only one of simple, consistentHash or backendUtilization can be set");
        }
        self.consistent_hash.validate(&path.key("consistentHash"), issues);
        self.backend_utilization.validate(&path.key("backendUtilization"), issues);
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate_with(&path.key("localityLbSetting"), has_outlier_detection, issues);
        }
        self.zone_aware_lb_setting.validate(&path.key("zoneAwareLbSetting"), issues);
        ms_duration(issues, &path.key("warmupDurationSecs"), self.warmup_duration_secs.as_deref());
        self.warmup.validate(&path.key("warmup"), issues);
    }
}

impl Validate for LoadBalancerSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        self.validate_with(path, true, issues);
    }
}

impl Validate for ConsistentHashLb {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|set| **set).count() {
            0 => issues.warn(
                path,
                "consistentHash names no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName), so requests are not sticky",
            ),
            1 => {}
            _ => issues.error(
                path,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set",
            ),
        }
        if self.http_header_name.as_deref() == Some("") {
            issues.error(&path.key("httpHeaderName"), "httpHeaderName must not be empty");
        }
        if self.http_query_parameter_name.as_deref() == Some("") {
            issues.error(&path.key("httpQueryParameterName"), "httpQueryParameterName must not be empty");
        }
        self.http_cookie.validate(&path.key("httpCookie"), issues);

        if self.ring_hash.is_some() && self.maglev.is_some() {
            issues.error(path, "only one of ringHash or maglev can be set");
        }
        if let Some(size) = self.minimum_ring_size.filter(|size| *size != 0) {
            let at = path.key("minimumRingSize");
            issues.warn(&at, "minimumRingSize is deprecated, use ringHash.minimumRingSize");
            if self.ring_hash.is_some() || self.maglev.is_some() {
                issues.error(&at, "only one of minimumRingSize or ringHash/maglev can be set");
            }
            ring_size(issues, &at, size);
        }
        if let Some(size) = self.ring_hash.as_ref().and_then(|r| r.minimum_ring_size) {
            ring_size(issues, &path.key("ringHash").key("minimumRingSize"), size);
        }
        if let Some(maglev) = &self.maglev {
            let at = path.key("maglev").key("tableSize");
            match maglev.table_size.unwrap_or(0) {
                0 => issues.error(&at, "tableSize must be set for maglev"),
                size if size >= MAGLEV_TABLE_SIZE_LIMIT => {
                    issues.error(&at, format!("tableSize {size} must be less than {MAGLEV_TABLE_SIZE_LIMIT}"))
                }
                size if !is_prime(size) => issues.error(&at, format!("tableSize {size} must be a prime number")),
                _ => {}
            }
        }
    }
}

fn ring_size(issues: &mut Issues, path: &FieldPath, size: u64) {
    if size > RING_SIZE_MAX {
        issues.error(path, format!("ring size {size} must be at most {RING_SIZE_MAX}"));
    }
}

/// Primality exactly as Envoy (and Istio) check a Maglev table size: trial division, 1 counts as prime.
pub(in crate::istio::destination_rule) fn is_prime(x: u64) -> bool {
    if x == 0 {
        return false;
    }
    if x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3;
    while factor * factor <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

impl Validate for HttpCookie {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.name.is_empty() {
            issues.error(&path.key("name"), "cookie name is required");
        }
        syntax_duration(issues, &path.key("ttl"), self.ttl.as_deref());
        for (i, attribute) in self.attributes.iter().flatten().enumerate() {
            if attribute.name.is_empty() {
                issues.error(&path.key("attributes").index(i).key("name"), "cookie attribute name is required");
            }
        }
    }
}

impl Validate for BackendUtilizationLb {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        syntax_duration(issues, &path.key("weightExpirationPeriod"), self.weight_expiration_period.as_deref());
        syntax_duration(issues, &path.key("weightStabilizationPeriod"), self.weight_stabilization_period.as_deref());
        syntax_duration(issues, &path.key("weightUpdatePeriod"), self.weight_update_period.as_deref());
    }
}

impl LocalityLbSetting {
    /// Validates these settings as Istio does; `has_outlier_detection` as in
    /// [`LoadBalancerSettings::validate_with`].
    pub fn validate_with(&self, path: &FieldPath, has_outlier_detection: bool, issues: &mut Issues) {
        let distribute = self.distribute.as_deref().unwrap_or_default();
        let failover = self.failover.as_deref().unwrap_or_default();
        let priority = self.failover_priority.as_deref().unwrap_or_default();
        if !distribute.is_empty() && !failover.is_empty() {
            issues.error(path, "only one of distribute or failover can be set");
        }
        if !failover.is_empty() {
            for (i, label) in priority.iter().enumerate() {
                if TOPOLOGY_LABELS.contains(&label.as_str()) {
                    issues.error(
                        &path.key("failoverPriority").index(i),
                        format!("topology label {label:?} cannot be listed together with failover"),
                    );
                }
            }
        }

        let mut sources = Vec::new();
        for (i, entry) in distribute.iter().enumerate() {
            let at = path.key("distribute").index(i);
            sources.push(entry.from.as_deref().unwrap_or_default());
            let to = entry.to.as_ref();
            let mut total: u64 = 0;
            for (locality, weight) in to.into_iter().flatten() {
                if !(1..=100).contains(weight) {
                    issues.error(
                        &at.key("to").key(locality),
                        format!("locality weight {weight} must be between 1 and 100"),
                    );
                }
                total += u64::from(*weight);
            }
            if total != 100 {
                issues.error(&at.key("to"), format!("locality weights sum to {total}, they must sum to 100"));
            }
            let targets: Vec<&str> = to.into_iter().flatten().map(|(locality, _)| locality.as_str()).collect();
            if let Err(reason) = localities(&targets) {
                issues.error(&at.key("to"), reason);
            }
        }
        if let Err(reason) = localities(&sources) {
            issues.error(&path.key("distribute"), reason);
        }

        if (!failover.is_empty() || !priority.is_empty()) && !has_outlier_detection {
            issues.warn(path, "failover only takes effect with an outlierDetection policy");
        }
        validate_failover(&path.key("failover"), failover, issues);
    }
}

fn validate_failover(path: &FieldPath, failover: &[LocalityFailover], issues: &mut Issues) {
    for (i, entry) in failover.iter().enumerate() {
        let at = path.index(i);
        let from = entry.from.as_deref().unwrap_or_default();
        let to = entry.to.as_deref().unwrap_or_default();
        if from == to {
            issues.error(&at, format!("failover from and to must be different regions, both are {from:?}"));
        }
        for (key, region) in [("from", from), ("to", to)] {
            if region.contains('/') {
                issues.error(&at.key(key), format!("failover names a region only, not {region:?}"));
            }
            if region.contains('*') {
                issues.error(&at.key(key), format!("failover region {region:?} must not contain '*'"));
            }
        }
    }
}

/// Checks a list of localities (`region/zone/subzone`, optional trailing `*`) for syntax and overlap.
fn localities(list: &[&str]) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in list {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!("locality {locality:?} may hold one '*' and only at the end"));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(format!("locality {locality:?} must not have an empty region, zone or subzone"));
        }
        // A trailing `*` part, or a shorter locality, covers every longer one below it.
        let covers = |a: &[&str], b: &[&str]| {
            a.iter().zip(b.iter()).all(|(x, y)| x == y || *x == "*") && (a.len() <= b.len() || a.last() == Some(&"*"))
        };
        if seen.iter().any(|prev| covers(prev, &parts) || covers(&parts, prev)) {
            return Err(format!("locality {locality:?} overlaps one listed before it"));
        }
        seen.push(parts);
    }
    Ok(())
}

impl Validate for ZoneAwareLbSetting {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if self.min_cluster_size == Some(0) {
            issues.error(&path.key("minClusterSize"), "minClusterSize must be at least 1");
        }
        validate_failover(&path.key("failover"), self.failover.as_deref().unwrap_or_default(), issues);
    }
}

impl Validate for WarmupConfiguration {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        ms_duration(issues, &path.key("duration"), Some(&self.duration));
        if let Some(percent) = self.minimum_percent
            && !(0.0..=100.0).contains(&percent)
        {
            issues.error(&path.key("minimumPercent"), format!("minimumPercent {percent} must be between 0 and 100"));
        }
        if let Some(aggression) = self.aggression
            && (aggression.is_nan() || aggression < 1.0)
        {
            issues.error(&path.key("aggression"), format!("aggression {aggression} must be at least 1"));
        }
    }
}
