//! `SAVE … TO DISK`: writes one module back into the TOML file, leaving every other
//! section — and its comments — as it was. The previous file is kept as `<file>.bak`, and
//! the new one replaces it atomically.

use std::path::Path;

use toml_edit::{DocumentMut, Item};

use super::module::Module;
use crate::config::Config;
use crate::rules::firewall::write_atomically;

/// Saves `module` of `next` into the file at `path`, whose current contents are `disk`.
pub fn save(path: &Path, disk: &Config, next: &Config, module: Module) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match module {
        Module::Servers => {
            replace(&mut doc, "servers", &next.servers)?;
            replace(&mut doc, "galera_hostgroups", &next.galera_hostgroups)?;
        }
        Module::Users => replace(&mut doc, "users", &next.users)?,
        Module::QueryRules => replace(&mut doc, "query_rules", &next.query_rules)?,
        Module::Variables => save_variables(&mut doc, disk, next)?,
        // read-only: nothing of them is in the file
        Module::AdminVariables => return Ok(()),
    }
    let backup = path.with_extension("toml.bak");
    std::fs::copy(path, &backup).map_err(|e| format!("{}: {e}", backup.display()))?;
    write_atomically(path, doc.to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces the array of tables `key` with `items` (or removes it when empty).
fn replace<T: serde::Serialize>(
    doc: &mut DocumentMut,
    key: &str,
    items: &[T],
) -> Result<(), String> {
    if items.is_empty() {
        doc.remove(key);
        return Ok(());
    }
    #[derive(serde::Serialize)]
    struct Wrapper<'a, T> {
        #[serde(rename = "items")]
        items: &'a [T],
    }
    let text = toml::to_string(&Wrapper { items }).map_err(|e| e.to_string())?;
    let mut parsed: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    let item = parsed
        .remove("items")
        .ok_or("serialized rows are missing")?;
    doc.insert(key, item);
    Ok(())
}

/// Writes the settings that differ between `disk` and `next`, key by key, so untouched
/// keys keep their text (relative paths, comments).
fn save_variables(doc: &mut DocumentMut, disk: &Config, next: &Config) -> Result<(), String> {
    let sections: [(&str, toml::Value, toml::Value); 7] = [
        ("proxy", value(&disk.proxy)?, value(&next.proxy)?),
        ("pool", value(&disk.pool)?, value(&next.pool)?),
        ("throttle", value(&disk.throttle)?, value(&next.throttle)?),
        ("firewall", value(&disk.firewall)?, value(&next.firewall)?),
        (
            "query_log",
            value(&disk.query_log)?,
            value(&next.query_log)?,
        ),
        (
            "query_cache",
            value(&disk.query_cache)?,
            value(&next.query_cache)?,
        ),
        ("mirror", value(&disk.mirror)?, value(&next.mirror)?),
    ];
    let monitor = match (&disk.monitor, &next.monitor) {
        (Some(a), Some(b)) => Some(("monitor", value(a)?, value(b)?)),
        _ => None,
    };
    for (section, before, after) in sections.into_iter().chain(monitor) {
        let (toml::Value::Table(before), toml::Value::Table(after)) = (before, after) else {
            continue;
        };
        for (key, new) in after {
            if before.get(&key) == Some(&new) {
                continue;
            }
            let table = doc
                .entry(section)
                .or_insert_with(|| Item::Table(toml_edit::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("[{section}] in the file is not a table"))?;
            table.insert(&key, edit_value(&new)?);
        }
    }
    Ok(())
}

fn value<T: serde::Serialize>(section: &T) -> Result<toml::Value, String> {
    toml::Value::try_from(section).map_err(|e| e.to_string())
}

fn edit_value(v: &toml::Value) -> Result<Item, String> {
    let text = format!("v = {v}");
    let mut parsed: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    parsed
        .remove("v")
        .ok_or_else(|| "unwritable value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_servers_keeps_other_sections_and_their_comments() {
        let dir = std::env::temp_dir().join(format!("sluice-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        let original = "# the proxy\n[proxy]\nlisten = \"127.0.0.1:7000\" # keep me\n\n[[servers]]\nhost = \"a\"\nhostgroup = 1\n\n[[users]]\nname = \"u\" # a user\npassword = \"\"\ndefault_hostgroup = 1\n";
        std::fs::write(&path, original).unwrap();
        let disk = Config::load(&path).unwrap();
        let mut next = disk.clone();
        next.servers[0].weight = 7;
        next.servers.push(crate::config::Server {
            host: "b".into(),
            ..next.servers[0].clone()
        });
        next.proxy.idle_timeout_ms = 1234;
        save(&path, &disk, &next, Module::Servers).unwrap();
        save(&path, &disk, &next, Module::Variables).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# keep me") && text.contains("name = \"u\" # a user"),
            "{text}"
        );
        let back = Config::load(&path).unwrap();
        assert_eq!(back.servers.len(), 2);
        assert_eq!(back.servers[0].weight, 7);
        assert_eq!(back.proxy.idle_timeout_ms, 1234);
        assert_eq!(back.proxy.listen.port(), 7000);
        assert!(!std::fs::read_to_string(path.with_extension("toml.bak"))
            .unwrap()
            .is_empty());
    }
}
