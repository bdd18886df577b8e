//! What an import did: the totals, and the summary printed at the end.

use std::time::Duration;

use super::ImportKind;
use super::file::Chunk;

/// Bad rows printed in full; the rest are counted.
const SHOWN_BAD_ROWS: usize = 100;

/// Totals for the summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) read: u64,
    pub(super) blank: u64,
    /// Rows stored (contacts, companies) or published (leads).
    pub(super) done: u64,
    /// Rows stored (companies) or filed (leads) before this run, left as they are.
    pub(super) present: u64,
    /// Stored companies whose empty fields a row filled in.
    pub(super) updated: u64,
    /// Why the leads import could not ask which rows were filed before, if it could not.
    pub(super) unchecked: Option<String>,
    pub(super) bad: Vec<(usize, String)>,
}

impl Tally {
    pub(super) fn take<T>(&mut self, chunk: &mut Chunk<T>) {
        self.read += chunk.read;
        self.blank += chunk.blank;
        self.bad.append(&mut chunk.bad);
    }
}

/// Prints what the import did.
pub(super) fn print_summary(kind: ImportKind, file_name: &str, tally: &Tally, took: Duration) {
    let rows = tally.read - tally.blank;
    println!(
        "Imported {} from {file_name} in {:.1} s.",
        kind.as_str(),
        took.as_secs_f64()
    );
    println!("  rows read:  {rows}");
    match kind {
        ImportKind::Leads => {
            println!("  published:  {}", tally.done);
            match &tally.unchecked {
                None => println!("  already filed: {}", tally.present),
                Some(_) => println!("  already filed: not checked"),
            }
        }
        ImportKind::Companies => {
            println!("  stored:     {}", tally.done);
            println!("  updated:    {}", tally.updated);
            println!("  already stored: {}", tally.present);
        }
        ImportKind::Contacts => println!("  stored:     {}", tally.done),
    }
    println!("  skipped:    {}", tally.bad.len());
    if tally.blank > 0 {
        println!("  blank rows ignored: {}", tally.blank);
    }
    if kind == ImportKind::Leads {
        println!(
            "The daemon's consumers file the published rows as leads; a row filed before from \
             the same source is not published again."
        );
        if let Some(why) = &tally.unchecked {
            println!(
                "Cannot check which rows were filed before ({why}), so every row was published; \
                 the daemon still files each row only once."
            );
        }
    }
    if tally.bad.is_empty() {
        return;
    }
    println!("Rows not imported:");
    for (line, why) in tally.bad.iter().take(SHOWN_BAD_ROWS) {
        println!("  line {line}: {why}");
    }
    if tally.bad.len() > SHOWN_BAD_ROWS {
        println!("  ... and {} more", tally.bad.len() - SHOWN_BAD_ROWS);
    }
}
