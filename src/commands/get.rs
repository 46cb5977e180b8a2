//! `skiff get`: objects as kubectl shows them, in the columns the server's Table output names.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::kubeconfig;
use super::manifest::message;
use super::resource::{self, Resource};

/// Display one or many objects.
#[derive(Args)]
pub struct Get {
    /// The resource type: plural, singular or short name (pods, pod, po, deployments.apps).
    resource: String,
    /// Names of objects to show (default: all).
    names: Vec<String>,
    /// The namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Objects in all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only objects with these labels, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Output format: the server's columns (default), all of them (wide), names, YAML or JSON.
    #[arg(short, long, value_enum)]
    output: Option<Format>,
    /// The kubeconfig (default: $KUBECONFIG, then the default data directory's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// How `skiff get` prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Wide,
    Name,
    Yaml,
    Json,
}

impl Get {
    pub async fn execute(self) -> anyhow::Result<()> {
        let client = kubeconfig::client(self.kubeconfig.as_deref()).await?;
        let resource = resource::resolve(&client, &self.resource).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let all = self.all_namespaces && self.names.is_empty();
        let api: Api<DynamicObject> = match (resource.namespaced, all) {
            (true, false) => Api::namespaced_with(client.clone(), &namespace, &resource.api),
            _ => Api::all_with(client.clone(), &resource.api),
        };
        match self.output {
            None | Some(Format::Wide) => {
                let table = self.table(&client, &api).await?;
                let text = render(&table, self.output == Some(Format::Wide), all);
                if text.is_empty() {
                    if resource.namespaced && !all {
                        eprintln!("No resources found in {namespace} namespace.");
                    } else {
                        eprintln!("No resources found");
                    }
                } else {
                    print!("{text}");
                }
            }
            Some(format) => {
                let objects = self.objects(&api).await?;
                print_objects(&resource, objects, format)?;
            }
        }
        Ok(())
    }

    /// The server's Table of the named objects, or of all of them (rows merged).
    async fn table(
        &self,
        client: &kube::Client,
        api: &Api<DynamicObject>,
    ) -> anyhow::Result<Value> {
        let request = kube::core::Request::new(api.resource_url());
        let requests = if self.names.is_empty() {
            let mut lp = ListParams::default();
            if let Some(s) = &self.selector {
                lp = lp.labels(s);
            }
            vec![request.list(&lp)?]
        } else {
            self.names
                .iter()
                .map(|n| request.get(n, &Default::default()))
                .collect::<Result<_, _>>()?
        };
        let mut table: Option<Value> = None;
        for mut req in requests {
            req.headers_mut().insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static(
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                ),
            );
            let text = client
                .request_text(req)
                .await
                .map_err(|e| anyhow::anyhow!(message(&e)))?;
            let part: Value = serde_json::from_str(&text)?;
            if part["kind"] != "Table" {
                bail!("the server did not answer with a Table");
            }
            match &mut table {
                None => table = Some(part),
                Some(t) => {
                    let rows = part["rows"].as_array().cloned().unwrap_or_default();
                    if let Some(all) = t["rows"].as_array_mut() {
                        all.extend(rows);
                    }
                }
            }
        }
        Ok(table.unwrap_or_default())
    }

    async fn objects(&self, api: &Api<DynamicObject>) -> anyhow::Result<Vec<DynamicObject>> {
        if self.names.is_empty() {
            let mut lp = ListParams::default();
            if let Some(s) = &self.selector {
                lp = lp.labels(s);
            }
            let list = api
                .list(&lp)
                .await
                .map_err(|e| anyhow::anyhow!(message(&e)))?;
            Ok(list.items)
        } else {
            let mut out = Vec::new();
            for name in &self.names {
                out.push(
                    api.get(name)
                        .await
                        .map_err(|e| anyhow::anyhow!(message(&e)))?,
                );
            }
            Ok(out)
        }
    }
}

/// The Table as aligned text: upper-case headers, columns of priority 0 (all with `wide`), a
/// NAMESPACE column first across namespaces.
fn render(table: &Value, wide: bool, namespaces: bool) -> String {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let rows = table["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return String::new();
    }
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = columns.iter().map(|(_, n)| n.clone()).collect();
    if namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    lines.push(header);
    for row in &rows {
        let cells = row["cells"].as_array().cloned().unwrap_or_default();
        let mut line: Vec<String> = columns
            .iter()
            .map(|(i, _)| match cells.get(*i) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "<none>".into(),
                Some(v) => v.to_string(),
            })
            .collect();
        if namespaces {
            let ns = row["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("");
            line.insert(0, ns.to_string());
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let last = line.len() - 1;
        for (i, cell) in line.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn print_objects(
    resource: &Resource,
    objects: Vec<DynamicObject>,
    format: Format,
) -> anyhow::Result<()> {
    let with_type = |o: DynamicObject| -> anyhow::Result<Value> {
        let mut v = serde_json::to_value(o)?;
        v["apiVersion"] = resource.api.api_version.clone().into();
        v["kind"] = resource.api.kind.clone().into();
        Ok(v)
    };
    match format {
        Format::Name => {
            for o in objects {
                println!(
                    "{}/{}",
                    resource.display(),
                    o.metadata.name.unwrap_or_default()
                );
            }
        }
        Format::Wide | Format::Yaml | Format::Json => {
            let mut values = objects
                .into_iter()
                .map(with_type)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let doc = if values.len() == 1 {
                values.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
            };
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", serde_yaml::to_string(&doc)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_kubectl_aligns_them() {
        let table = serde_json::json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Ready", "priority": 0},
                {"name": "Node", "priority": 1}],
            "rows": [
                {"cells": ["ticker", "1/1", "edge-1"], "object": {"metadata": {"namespace": "default"}}},
                {"cells": ["shared-log", "2/2", null], "object": {"metadata": {"namespace": "default"}}}],
        });
        assert_eq!(
            render(&table, false, false),
            "NAME         READY\nticker       1/1\nshared-log   2/2\n"
        );
        assert_eq!(
            render(&table, true, true),
            "NAMESPACE   NAME         READY   NODE\n\
             default     ticker       1/1     edge-1\n\
             default     shared-log   2/2     <none>\n"
        );
    }
}
