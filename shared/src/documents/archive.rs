//! The zip inside Word and Excel files, opened with bounds: how many entries it may list and
//! how many bytes may be inflated out of it, counted as they come out (a zip's headers can
//! claim any size), so a zip bomb costs at most the budget.

use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::{ExtractError, ExtractSettings, Format};

pub(super) struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    format: Format,
    /// Bytes that may still be inflated.
    left: u64,
    budget: u64,
}

impl<'a> Archive<'a> {
    pub(super) fn open(
        bytes: &'a [u8],
        format: Format,
        settings: &ExtractSettings,
    ) -> Result<Self, ExtractError> {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error(format, e))?;
        if zip.len() > settings.max_zip_entries {
            return Err(ExtractError::Inflation {
                reason: format!(
                    "it lists {} entries; the limit is {}",
                    zip.len(),
                    settings.max_zip_entries
                ),
            });
        }
        Ok(Archive {
            zip,
            format,
            left: settings.max_unzipped_bytes,
            budget: settings.max_unzipped_bytes,
        })
    }

    /// The entry `name` inflated, `None` when the archive has no such entry.
    pub(super) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ExtractError> {
        let Some(index) = self.zip.index_for_name(name) else {
            return Ok(None);
        };
        self.inflate(index).map(Some)
    }

    /// Inflates every entry whose name `wanted` accepts, counting it against the budget and
    /// dropping it: the check for a parser that reads the zip itself (calamine).
    pub(super) fn inflate_all(
        &mut self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(), ExtractError> {
        for index in 0..self.zip.len() {
            let name = match self.zip.name_for_index(index) {
                Some(Ok(name)) => name.into_owned(),
                _ => continue,
            };
            if wanted(&name) {
                self.inflate(index)?;
            }
        }
        Ok(())
    }

    fn inflate(&mut self, index: usize) -> Result<Vec<u8>, ExtractError> {
        let format = self.format;
        let mut entry = self.zip.by_index(index).map_err(|e| zip_error(format, e))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry {index}"));
        // The declared size is a hint only; the count below is what holds.
        if entry.size() > self.left {
            return Err(over(&name, self.budget));
        }
        let capacity = usize::try_from(entry.size().min(self.left)).unwrap_or(0);
        let mut out = Vec::with_capacity(capacity);
        let read = (&mut entry)
            .take(self.left + 1)
            .read_to_end(&mut out)
            .map_err(|e| ExtractError::Corrupt {
                format,
                reason: format!("{name}: {e}"),
            })?;
        if read as u64 > self.left {
            return Err(over(&name, self.budget));
        }
        self.left -= read as u64;
        Ok(out)
    }
}

fn over(name: &str, budget: u64) -> ExtractError {
    ExtractError::Inflation {
        reason: format!("{name} inflates past the {budget}-byte budget for the whole file"),
    }
}

fn zip_error(format: Format, e: ZipError) -> ExtractError {
    match e {
        ZipError::Io(io) => ExtractError::Corrupt {
            format,
            reason: format!("not a readable zip: {io}"),
        },
        other => ExtractError::Corrupt {
            format,
            reason: format!("not a readable zip: {other}"),
        },
    }
}
