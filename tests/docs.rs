//! The docs cannot go stale silently. `docs/openapi.json` is what the server serves at `/openapi.json`;
//! `docs/cli.md` embeds the `--help` of the binary and of every subcommand as they print it; `docs/api.md` names
//! every route of the spec and every error code the server can answer; no document links to a file that is not
//! in the repository. `UPDATE_DOCS=1 cargo test --test docs` rewrites the generated parts (the spec and the
//! help blocks) from the code.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repository().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_DOCS").is_some_and(|value| !value.is_empty() && value != "0")
}

/// Writes `text` to `relative` when updating; otherwise fails unless the file already holds it.
fn check_or_update(relative: &str, text: &str) {
    if updating() {
        // Through a rename, so that a test reading the file meanwhile sees the old or the new text, never half.
        let path = repository().join(relative);
        let staged = path.with_extension("updating");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &path).unwrap();
    } else {
        assert!(read(relative) == text, "{relative} is stale: run `UPDATE_DOCS=1 cargo test --test docs`");
    }
}

#[test]
fn openapi_json_is_what_the_server_serves() {
    let server = Server::start(&[]);
    let reply = server.get("/openapi.json");
    assert_eq!(reply.status, 200);
    let spec = reply.json();
    check_or_update("docs/openapi.json", &format!("{}\n", serde_json::to_string_pretty(&spec).unwrap()));
}

/// `samserve ARGS --help` as a user's terminal shows it, whatever SAMSERVE_* variables this machine has set (clap
/// prints their values next to the options).
fn help(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_samserve"));
    command.args(args).arg("--help");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SAMSERVE_") {
            command.env_remove(name);
        }
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "samserve {args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands listed under `Commands:` in the top-level help, but `help`.
fn subcommands(top_level_help: &str) -> Vec<String> {
    top_level_help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The marker line before the fenced help block of `command` (`samserve` or `samserve serve`) in docs/cli.md.
fn help_marker(command: &str) -> String {
    format!("<!-- {command} --help -->")
}

/// `document` with the fenced block after `marker` replaced by `help`; None when the marker is missing.
fn with_help_block(document: &str, marker: &str, help: &str) -> Option<String> {
    let start = document.find(marker)? + marker.len();
    let rest = &document[start..];
    let fence_open = rest.find("```text\n")? + "```text\n".len();
    let fence_close = fence_open + rest[fence_open..].find("```")?;
    Some(format!("{}{}{help}{}", &document[..start], &rest[..fence_open], &rest[fence_close..]))
}

#[test]
fn cli_md_embeds_the_help_of_every_subcommand() {
    let top = help(&[]);
    assert!(subcommands(&top).contains(&"serve".to_string()), "no subcommands found in:\n{top}");
    // Every command, depth first: `samserve`, `samserve serve`, ..., `samserve models`, `samserve models inspect`.
    let mut commands = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for name in subcommands(&text).into_iter().rev() {
            pending.push([path.clone(), vec![name]].concat());
        }
        commands.push((["samserve".to_string()].into_iter().chain(path).collect::<Vec<_>>().join(" "), text));
    }
    let mut document = read("docs/cli.md");
    let mut missing = Vec::new();
    for (command, text) in &commands {
        match with_help_block(&document, &help_marker(command), text) {
            Some(updated) => document = updated,
            None => missing.push((command, text)),
        }
    }
    if updating() {
        for (command, text) in &missing {
            document.push_str(&format!("\n## `{command}`\n\n{}\n```text\n{text}```\n", help_marker(command)));
        }
    } else {
        let names: Vec<_> = missing.iter().map(|(command, _)| command).collect();
        assert!(names.is_empty(), "docs/cli.md has no help block for {names:?} (`<!-- samserve NAME --help -->`)");
    }
    check_or_update("docs/cli.md", &document);
}

#[test]
fn api_md_names_every_route_of_the_spec() {
    let spec: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let api = read("docs/api.md");
    let paths = spec["paths"].as_object().expect("paths in the spec");
    let mut missing = Vec::new();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let route = format!("{} {path}", method.to_uppercase());
            if !api.contains(&route) {
                missing.push(route);
            }
        }
    }
    assert!(paths.len() >= 10, "too few paths in docs/openapi.json");
    assert!(missing.is_empty(), "docs/api.md does not document {missing:?}");
}

/// The error codes in the source: the string literal after each `StatusCode::NAME,` (how every `ApiError` is made).
fn error_codes_in(source: &str) -> Vec<String> {
    source
        .split("StatusCode::")
        .skip(1)
        .filter_map(|after| {
            let rest = after.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
            let rest = rest.strip_prefix(',')?.trim_start().strip_prefix('"')?;
            let code = &rest[..rest.find('"')?];
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_').then(|| code.to_string())
        })
        .collect()
}

#[test]
fn api_md_lists_every_error_code_the_server_answers() {
    let files = common::rust_files(&repository().join("src"));
    let mut codes: Vec<String> =
        files.iter().flat_map(|file| error_codes_in(&std::fs::read_to_string(file).unwrap())).collect();
    codes.sort();
    codes.dedup();
    assert!(codes.len() >= 10 && codes.contains(&"image_not_found".to_string()), "codes found: {codes:?}");
    let api = read("docs/api.md");
    let missing: Vec<&String> = codes.iter().filter(|code| !api.contains(&format!("`{code}`"))).collect();
    assert!(missing.is_empty(), "docs/api.md does not list the error codes {missing:?}");
}

/// The targets of the relative links `](target)` of a markdown text, without their `#anchor`.
fn relative_links(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|after| after.split([')', ' ']).next())
        .filter(|target| !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:"))
        .map(|target| target.split('#').next().unwrap_or_default().to_string())
        .filter(|target| !target.is_empty())
        .collect()
}

#[test]
fn readme_and_docs_link_only_to_files_in_the_repository() {
    let mut documents = vec![repository().join("README.md")];
    for entry in std::fs::read_dir(repository().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    let root = repository().canonicalize().unwrap();
    for document in documents {
        let text = std::fs::read_to_string(&document).unwrap();
        for target in relative_links(&text) {
            let resolved = document.parent().unwrap().join(&target);
            let inside = resolved.canonicalize().is_ok_and(|path| path.starts_with(&root));
            assert!(inside, "{} links to {target}, which is not a file of the repository", document.display());
        }
        for outside in ["../shared", "shared/API.md", "shared/DESIGN.md"] {
            assert!(!text.contains(outside), "{} names {outside}, outside the repository", document.display());
        }
    }
}

#[test]
fn link_and_error_code_scanners_find_what_they_should() {
    let source = r#"Self::new(StatusCode::NOT_FOUND, "job_not_found", m); (StatusCode::BAD_REQUEST, "empty_body") StatusCode::OK"#;
    assert_eq!(error_codes_in(source), ["job_not_found", "empty_body"]);
    let markdown = "[a](api.md) [b](../README.md#status) [c](https://example.com/x) [d](#top) ![e](x/y.png)";
    assert_eq!(relative_links(markdown), ["api.md", "../README.md", "x/y.png"]);
}

/// The README's catalogue table, from `src/hub/catalogue.toml`.
fn catalogue_table() -> String {
    let mut table = String::from(
        "| name | family | download | license | supports | files from |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for entry in samserve::hub::catalogue() {
        let pinned = if entry.revision == "main" { "main".to_string() } else { entry.revision[..7].to_string() };
        let files = match &entry.archive {
            Some(archive) => format!("`{archive}` (unpacked)"),
            None => entry.files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
        };
        table.push_str(&format!(
            "| `{}` | {} | {:.0} MB | {} | {} | [{}]({}) @ {pinned}: {files} |\n",
            entry.name,
            entry.family,
            entry.size_mb,
            entry.license,
            entry.supports.join(", "),
            entry.repo,
            entry.source
        ));
    }
    table
}

#[test]
fn readme_lists_the_catalogue() {
    let (open, close) = ("<!-- catalogue -->\n", "<!-- /catalogue -->");
    let readme = read("README.md");
    let start = readme.find(open).expect("README.md has a <!-- catalogue --> block") + open.len();
    let end = start + readme[start..].find(close).expect("and its end");
    let updated = format!("{}{}{}", &readme[..start], catalogue_table(), &readme[end..]);
    check_or_update("README.md", &updated);
}
