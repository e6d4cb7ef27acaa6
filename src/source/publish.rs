//! The publisher: Index -> `RoutingTable::build` -> swap, with logs and metrics.
//!
//! Shared by every source so that a table is always built and published the same way.

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::index::Index;
use crate::metrics::TableMetrics;
use crate::table::{BuildConfig, Diagnostic, RoutingTable, TableReader, TableWriter};

/// Builds and publishes routing tables; owned by exactly one source task.
#[derive(Debug)]
pub struct Publisher {
    writer: TableWriter,
    config: BuildConfig,
    metrics: TableMetrics,
    generation: u64,
    /// Diagnostics of the previous table, so a problem is logged when it appears, not on
    /// every rebuild.
    known: BTreeSet<String>,
}

impl Publisher {
    /// A publisher that writes through `writer`.
    pub fn new(writer: TableWriter, config: BuildConfig, metrics: TableMetrics) -> Self {
        Self { writer, config, metrics, generation: 0, known: BTreeSet::new() }
    }

    /// A reader of the published table.
    pub fn reader(&self) -> TableReader {
        self.writer.reader()
    }

    /// Builds a table from `index` and publishes it. Returns the new generation.
    pub fn publish(&mut self, index: &Index) -> u64 {
        self.publish_located(index, |_| None)
    }

    /// Like [`Publisher::publish`]; `locate` names where an object at fault was defined (a
    /// file and document in file mode), so a problem is logged where the user can fix it.
    pub fn publish_located(&mut self, index: &Index, locate: impl Fn(&Diagnostic) -> Option<String>) -> u64 {
        let started = Instant::now();
        self.generation += 1;
        let previous = self.writer.reader().load();
        let mut table = RoutingTable::build_from(index, &self.config, self.generation, Some(&previous));
        let elapsed = started.elapsed();
        table.stamp(Time(k8s_openapi::jiff::Timestamp::now()));

        let current: BTreeSet<String> = table.diagnostics().iter().map(Diagnostic::to_string).collect();
        for d in table.diagnostics() {
            let problem = d.to_string();
            if !self.known.contains(&problem) {
                match locate(d) {
                    Some(at) => tracing::warn!(generation = self.generation, "{at}: {problem}"),
                    None => tracing::warn!(generation = self.generation, "{problem}"),
                }
            }
        }
        for fixed in self.known.difference(&current) {
            tracing::info!(generation = self.generation, "resolved: {fixed}");
        }
        self.known = current;

        let m = &self.metrics;
        m.rebuilds.inc();
        m.rebuild_seconds.observe(elapsed.as_secs_f64());
        m.generation.set(self.generation as i64);
        m.ingresses.set(table.ingress_count() as i64);
        m.hosts.set(table.host_count() as i64);
        m.routes.set(table.route_count() as i64);
        m.problems.set(table.diagnostics().len() as i64);
        m.unsupported_annotations.reset();
        for (name, count) in table.unsupported_annotations() {
            m.unsupported_annotations.with_label_values(&[name.as_str()]).set(*count as i64);
        }
        for kind in crate::index::Kind::ALL {
            m.objects.with_label_values(&[kind.as_str()]).set(index.count(kind) as i64);
        }
        tracing::info!(
            generation = self.generation,
            ingresses = table.ingress_count(),
            hosts = table.host_count(),
            routes = table.route_count(),
            problems = table.diagnostics().len(),
            build_ms = elapsed.as_secs_f64() * 1e3,
            "routing table published"
        );
        self.writer.publish(table);
        self.generation
    }
}
