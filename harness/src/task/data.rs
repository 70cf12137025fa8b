//! Where a task's records come from: files in the task directory, or a dataset under a data
//! root that the repository does not hold.
//!
//! A task that reads a dataset says so at the top of `task.toml`:
//!
//! ```toml
//! data = "cuad"                 # <data root>/cuad/
//!
//! [splits]
//! dev = "dev.jsonl"             # the whole file, as before
//!
//! [splits.train]                # or a selection over the dataset's files
//! from = ["train.jsonl", "unused_pool.jsonl"]
//! max-chars = 10000             # only records whose text is at most this long
//! sort = "id"                   # each file's records sorted by id (default: file order)
//! take = 16                     # the first 16 that pass
//! ```
//!
//! The data root is, first found: `--data-root DIR` (the CLI sets [`DATA_ROOT_ENV`] from it),
//! the `PROMPTLOOP_DATA` environment variable, or the nearest `shared/datasets` folder beside a
//! folder above the task (the layout of a checkout next to the project's shared data).
//!
//! With `data`, each record's `expected` keeps only the properties of the task's schema, so a
//! task can score a subset of a dataset's fields. Splits are resolved in the order written, and
//! a record already taken by an earlier split is skipped, so two splits can draw disjoint records
//! from one pool file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::config::TomlDoc;
use super::TaskError;

/// The environment variable that names the data root.
pub const DATA_ROOT_ENV: &str = "PROMPTLOOP_DATA";

/// The folder, relative to a folder above the task, searched when no root is named.
const SHARED_DATASETS: &str = "shared/datasets";

/// How one split's records are chosen.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SplitSource {
    /// One JSONL file, every record, in file order.
    File(String),
    /// Records from several files, filtered, ordered and counted.
    Select(Selection),
}

/// `[splits.NAME]` as a table.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Selection {
    pub from: Vec<String>,
    pub max_chars: Option<usize>,
    pub sort_by_id: bool,
    pub take: Option<usize>,
}

impl SplitSource {
    /// Parses one `[splits]` entry: a file name or a selection table.
    pub(super) fn parse(name: &str, value: &Spanned<toml::Value>, doc: &TomlDoc<'_>) -> Result<SplitSource, TaskError> {
        let err = |key: &str, message: String| {
            let field = if key.is_empty() { format!("splits.{name}") } else { format!("splits.{name}.{key}") };
            doc.error(Some(value.span()), &field, message)
        };
        let table = match value.get_ref() {
            toml::Value::String(file) if file.trim().is_empty() => return Err(err("", "the file name is empty".into())),
            toml::Value::String(file) => return Ok(SplitSource::File(file.clone())),
            toml::Value::Table(table) => table,
            other => {
                return Err(err(
                    "",
                    format!(
                        "must be a file name or a table with `from` (and optionally `max-chars`, `sort`, `take`), found {}",
                        other.type_str()
                    ),
                ))
            }
        };
        let mut sel = Selection { from: Vec::new(), max_chars: None, sort_by_id: false, take: None };
        for (key, v) in table {
            match (key.as_str(), v) {
                ("from", toml::Value::String(f)) => sel.from = vec![f.clone()],
                ("from", toml::Value::Array(items)) => {
                    for item in items {
                        match item {
                            toml::Value::String(f) if !f.trim().is_empty() => sel.from.push(f.clone()),
                            _ => return Err(err("from", "every entry must be a non-empty file name".into())),
                        }
                    }
                }
                ("max-chars", toml::Value::Integer(n)) if *n > 0 => sel.max_chars = usize::try_from(*n).ok(),
                ("max-chars", _) => return Err(err("max-chars", "must be a whole number of characters >= 1".into())),
                ("take", toml::Value::Integer(n)) if *n > 0 => sel.take = usize::try_from(*n).ok(),
                ("take", _) => return Err(err("take", "must be a whole number >= 1".into())),
                ("sort", toml::Value::String(s)) if s == "id" => sel.sort_by_id = true,
                ("sort", toml::Value::String(s)) if s == "file" => sel.sort_by_id = false,
                ("sort", _) => return Err(err("sort", "must be \"id\" or \"file\" (the default)".into())),
                (other, _) => {
                    return Err(err(other, format!("unknown key `{other}` (expected `from`, `max-chars`, `sort`, `take`)")))
                }
            }
        }
        if sel.from.is_empty() {
            return Err(err(
                "from",
                "a selection needs `from`, the dataset file(s) to read, e.g. `from = \"train.jsonl\"`".into(),
            ));
        }
        Ok(SplitSource::Select(sel))
    }

    /// The files this split reads, in order.
    pub(super) fn files(&self) -> Vec<&str> {
        match self {
            SplitSource::File(f) => vec![f.as_str()],
            SplitSource::Select(sel) => sel.from.iter().map(String::as_str).collect(),
        }
    }
}

/// Applies a selection to records already read (file by file), skipping ids in `taken`.
pub(super) fn select<T>(
    sel: &Selection,
    files: Vec<Vec<T>>,
    taken: &HashSet<String>,
    id: impl Fn(&T) -> &str,
    chars: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut out = Vec::new();
    for mut records in files {
        records.retain(|r| !taken.contains(id(r)) && sel.max_chars.is_none_or(|max| chars(r) <= max));
        if sel.sort_by_id {
            records.sort_by(|a, b| id(a).cmp(id(b)));
        }
        for r in records {
            if sel.take.is_some_and(|n| out.len() >= n) {
                return out;
            }
            out.push(r);
        }
    }
    out
}

/// The folder of dataset `name`: under the data root named by the environment, or else the
/// nearest `shared/datasets` above `task_dir`. The error says where it looked and how to get the
/// data.
pub(super) fn dataset_dir(name: &str, task_dir: &Path) -> Result<PathBuf, String> {
    let named = std::env::var_os(DATA_ROOT_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    dataset_dir_in(name, task_dir, named.as_deref())
}

/// [`dataset_dir`] with the named root (if any) given.
fn dataset_dir_in(name: &str, task_dir: &Path, named: Option<&Path>) -> Result<PathBuf, String> {
    if name.trim().is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("`{name}` is not a dataset name (a folder name under the data root, e.g. \"cuad\")"));
    }
    let mut looked = Vec::new();
    if let Some(root) = named {
        let dir = root.join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        return Err(format!(
            "dataset `{name}` is not in the data root {} (from --data-root or {DATA_ROOT_ENV}): no folder {}. {}",
            root.display(),
            dir.display(),
            how_to_get(name)
        ));
    }
    for ancestor in task_dir.ancestors().skip(1) {
        let root = ancestor.join(SHARED_DATASETS);
        let dir = root.join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        looked.push(dir.display().to_string());
    }
    Err(format!(
        "dataset `{name}` not found: no --data-root or {DATA_ROOT_ENV} given, and none of {} exists. {}",
        looked.join(", "),
        how_to_get(name)
    ))
}

/// One sentence on where a dataset comes from.
fn how_to_get(name: &str) -> String {
    format!(
        "Point --data-root (or {DATA_ROOT_ENV}) at the folder that holds `{name}/`; the datasets are not in this \
         repository: docs/tasks.md names each one's upstream source and license"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(take: Option<usize>, max_chars: Option<usize>, sort_by_id: bool) -> Selection {
        Selection { from: vec!["a".into(), "b".into()], max_chars, sort_by_id, take }
    }

    #[test]
    fn a_selection_filters_sorts_each_file_skips_taken_ids_and_takes_the_first_n() {
        let files = vec![vec![("c", 5), ("a", 50), ("b", 3)], vec![("z", 1), ("y", 2), ("x", 9)]];
        let taken: HashSet<String> = ["y".to_owned()].into();
        let got = select(&sel(Some(4), Some(10), true), files.clone(), &taken, |r| r.0, |r| r.1);
        // File a sorted (a is too long), then file b sorted with y already taken.
        assert_eq!(got, vec![("b", 3), ("c", 5), ("x", 9), ("z", 1)]);
        let got = select(&sel(Some(2), None, false), files, &HashSet::new(), |r| r.0, |r| r.1);
        assert_eq!(got, vec![("c", 5), ("a", 50)]);
    }

    #[test]
    fn the_data_root_is_found_above_the_task_or_named_and_a_missing_one_says_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let task = tmp.path().join("checkout/evals/t");
        std::fs::create_dir_all(&task).unwrap();
        // Nothing there: the error names every place it looked and how to get the data.
        let err = dataset_dir_in("ds", &task, None).unwrap_err();
        assert!(err.contains(&tmp.path().join("checkout/evals/shared/datasets/ds").display().to_string()), "{err}");
        assert!(err.contains(&tmp.path().join("shared/datasets/ds").display().to_string()), "{err}");
        assert!(err.contains("--data-root"), "{err}");
        std::fs::create_dir_all(tmp.path().join("shared/datasets/ds")).unwrap();
        assert_eq!(dataset_dir_in("ds", &task, None).unwrap(), tmp.path().join("shared/datasets/ds"));
        assert!(dataset_dir_in("../ds", &task, None).is_err());
        // A named root wins, and a dataset missing there is an error naming it.
        let named = tmp.path().join("elsewhere");
        let err = dataset_dir_in("ds", &task, Some(&named)).unwrap_err();
        assert!(err.contains(&named.join("ds").display().to_string()), "{err}");
    }
}
