//! ConfigMaps and Secrets, as kubectl's describers print them (a Secret's values never).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::text::Text;

/// A ConfigMap: its data in full, its binary data as sizes.
pub fn config_map(t: &mut Text, cm: &ConfigMap) {
    let meta = &cm.metadata;
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    t.line(0, "");
    t.line(0, "Data");
    t.line(0, "====");
    for (k, v) in cm.data.iter().flatten() {
        t.line(0, format!("{k}:"));
        t.line(0, "----");
        // Tabs in values are data, not column separators.
        t.line(0, v.replace('\t', "    "));
        t.line(0, "");
    }
    t.line(0, "");
    t.line(0, "BinaryData");
    t.line(0, "====");
    for (k, v) in cm.binary_data.iter().flatten() {
        t.line(0, format!("{k}: {} bytes", v.0.len()));
    }
    t.line(0, "");
}

/// A Secret: its type and the size of each value.
pub fn secret(t: &mut Text, secret: &Secret) {
    let meta = &secret.metadata;
    t.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    t.field(
        0,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    t.map(0, "Labels", meta.labels.as_ref());
    t.annotations(0, "Annotations", meta);
    t.line(0, "");
    t.field(0, "Type", secret.type_.as_deref().unwrap_or_default());
    t.line(0, "");
    t.line(0, "Data");
    t.line(0, "====");
    for (k, v) in secret.data.iter().flatten() {
        t.field(0, k, format!("{} bytes", v.0.len()));
    }
}
