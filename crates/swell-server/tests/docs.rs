//! `docs/api.md`'s permission table is generated from the rules table
//! (`swell_server::auth::rules::RULES`); this test fails when the two differ.
//! Regenerate with `SWELL_UPDATE_DOCS=1 cargo test -p swell-server --test docs`.

use swell_server::auth::rules::permissions_markdown;

const BEGIN: &str = "<!-- permissions:begin (generated from RULES; SWELL_UPDATE_DOCS=1 cargo test -p swell-server --test docs) -->\n";
const END: &str = "<!-- permissions:end -->";

#[test]
fn api_md_permission_table_is_generated_from_rules() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let text = std::fs::read_to_string(path).expect("docs/api.md");
    let start = text.find(BEGIN).expect("the begin marker in docs/api.md") + BEGIN.len();
    let end = text[start..]
        .find(END)
        .expect("the end marker in docs/api.md")
        + start;
    let want = permissions_markdown();
    if std::env::var_os("SWELL_UPDATE_DOCS").is_some() {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(path, updated).expect("writing docs/api.md");
        return;
    }
    assert_eq!(
        &text[start..end],
        want,
        "docs/api.md is out of date: run SWELL_UPDATE_DOCS=1 cargo test -p swell-server --test docs"
    );
}
