//! Text out of an uploaded resume: PDF, DOCX or UTF-8 plain text, told apart by magic bytes.
//!
//! Why these parsers:
//! * PDF through `lopdf` (0.47, default features off): it is maintained, MIT, has no C dependencies, bounds
//!   decompression (a zip-bomb content stream fails instead of eating memory), decodes the simple-font encodings
//!   resumes use, and exposes the trailer so encryption is seen before text is asked for. `pdf-extract` builds on
//!   `lopdf` and lays text out more faithfully, but it panics on many malformed files and pulls in more
//!   dependencies; word order is all the skill matcher needs.
//! * DOCX through `zip` + `quick-xml`, hand-written here: only `word/document.xml` is read, `w:p` paragraphs become
//!   lines, `w:t` is text, `w:tab` / `w:br` / `w:cr` are whitespace. Headers, footers and text boxes outside the main
//!   body are not read.
//!
//! Nothing here panics on user input: every parser error is a [`DocumentError`], sizes are checked before parsing,
//! decompressed sizes are bounded, and the third-party PDF parser is additionally run under `catch_unwind` so a bug
//! in it surfaces as [`DocumentError::Corrupt`] rather than a crashed request.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use quick_xml::events::Event;

/// Default upper bound on an upload, in bytes (10 MiB).
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// Upper bound on decompressed content (a PDF page's content streams, a DOCX's `document.xml`).
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// What the bytes were recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// Starts with `%PDF`.
    Pdf,
    /// A zip archive holding `word/document.xml`.
    Docx,
    /// Anything else that is valid UTF-8.
    Text,
}

/// Text extracted from a document.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractedDocument {
    /// The detected type.
    pub kind: DocumentKind,
    /// Extracted text: paragraphs (DOCX) or text lines (PDF) separated by `\n`.
    pub text: String,
    /// Number of pages (PDF only; 1 for the other kinds).
    pub pages: usize,
}

/// Why no text came out of an upload. The messages are safe to show to the uploader.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Larger than the caller's limit.
    #[error("document is too large: {size} bytes (limit {limit})")]
    TooLarge {
        /// Size of the upload in bytes.
        size: usize,
        /// The limit that was passed in.
        limit: usize,
    },
    /// Zero bytes or only whitespace.
    #[error("document is empty")]
    Empty,
    /// The PDF is encrypted (its trailer has an `/Encrypt` entry).
    #[error("PDF is encrypted; upload an unprotected copy")]
    Encrypted,
    /// The file claims a known type but does not parse.
    #[error("{kind:?} file is corrupt: {reason}")]
    Corrupt {
        /// The type the magic bytes announced.
        kind: DocumentKind,
        /// Parser message (for logs; it names no internals of ours).
        reason: String,
    },
    /// The document parsed but holds no text, as a scanned page does.
    #[error("document contains no extractable text (scanned image?)")]
    NoText,
    /// Neither PDF, DOCX nor UTF-8 text (a zip that is not a DOCX, a binary file).
    #[error("unsupported document type: {0}")]
    Unsupported(String),
}

/// Extracts text from uploaded bytes, detecting the type by magic bytes.
///
/// `max_bytes` bounds the upload size ([`DEFAULT_MAX_BYTES`] is a sensible value).
pub fn extract_text(bytes: &[u8], max_bytes: usize) -> Result<ExtractedDocument, DocumentError> {
    if bytes.len() > max_bytes {
        return Err(DocumentError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError::Empty);
    }
    let doc = if bytes.starts_with(b"%PDF") {
        extract_pdf(bytes)?
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        extract_docx(bytes)?
    } else {
        extract_plain(bytes)?
    };
    if doc.text.trim().is_empty() {
        return Err(DocumentError::NoText);
    }
    Ok(doc)
}

fn extract_plain(bytes: &[u8]) -> Result<ExtractedDocument, DocumentError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|_| DocumentError::Unsupported("not PDF, DOCX or UTF-8 text".to_owned()))?;
    // UTF-8 that is mostly control characters is a binary file that happens to decode.
    let control = text
        .chars()
        .filter(|c| c.is_control() && !c.is_whitespace())
        .count();
    if control * 10 > text.chars().count() {
        return Err(DocumentError::Unsupported(
            "binary data, not text".to_owned(),
        ));
    }
    Ok(ExtractedDocument {
        kind: DocumentKind::Text,
        text: text.replace("\r\n", "\n"),
        pages: 1,
    })
}

fn corrupt_pdf(reason: impl ToString) -> DocumentError {
    DocumentError::Corrupt {
        kind: DocumentKind::Pdf,
        reason: reason.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn extract_pdf(bytes: &[u8]) -> Result<ExtractedDocument, DocumentError> {
    // lopdf decrypts with the empty password where it can and drops `/Encrypt` from the trailer, so both the parsed
    // state and the raw bytes are checked: any encryption is refused, as the service contract says.
    let declares_encrypt = contains(bytes, b"/Encrypt");
    let parsed = catch_unwind(AssertUnwindSafe(|| lopdf::Document::load_mem(bytes)));
    let doc = match parsed {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) if declares_encrypt => {
            let _ = e;
            return Err(DocumentError::Encrypted);
        }
        Ok(Err(e)) => return Err(corrupt_pdf(e)),
        Err(_) => return Err(corrupt_pdf("parser failure")),
    };
    if doc.was_encrypted() || doc.trailer.has(b"Encrypt") {
        return Err(DocumentError::Encrypted);
    }
    let pages: Vec<u32> = doc.get_pages().into_keys().collect();
    if pages.is_empty() {
        return Err(corrupt_pdf("no pages"));
    }
    let mut text = String::new();
    let mut errors = 0usize;
    for &page in &pages {
        let chunk = catch_unwind(AssertUnwindSafe(|| {
            doc.extract_text_with_limit(&[page], MAX_DECOMPRESSED)
        }));
        match chunk {
            Ok(Ok(t)) => {
                text.push_str(t.trim_end());
                text.push('\n');
            }
            _ => errors += 1,
        }
    }
    if errors == pages.len() {
        return Err(corrupt_pdf("no page content could be read"));
    }
    if text.trim().is_empty() {
        return Err(DocumentError::NoText);
    }
    Ok(ExtractedDocument {
        kind: DocumentKind::Pdf,
        text,
        pages: pages.len(),
    })
}

fn corrupt_docx(reason: impl ToString) -> DocumentError {
    DocumentError::Corrupt {
        kind: DocumentKind::Docx,
        reason: reason.to_string(),
    }
}

fn extract_docx(bytes: &[u8]) -> Result<ExtractedDocument, DocumentError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(corrupt_docx)?;
    let mut xml = Vec::new();
    {
        let entry = match archive.by_name("word/document.xml") {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(DocumentError::Unsupported(
                    "zip archive that is not a DOCX".to_owned(),
                ));
            }
            Err(e) => return Err(corrupt_docx(e)),
        };
        // Bound the inflated size: a small zip can inflate to gigabytes.
        entry
            .take(MAX_DECOMPRESSED as u64 + 1)
            .read_to_end(&mut xml)
            .map_err(corrupt_docx)?;
    }
    if xml.len() > MAX_DECOMPRESSED {
        return Err(corrupt_docx("word/document.xml is too large"));
    }
    let text = docx_xml_text(&xml)?;
    Ok(ExtractedDocument {
        kind: DocumentKind::Docx,
        text,
        pages: 1,
    })
}

/// WordprocessingML body -> text: one line per `w:p`, `w:t` as text, `w:tab` as a tab, `w:br` / `w:cr` as a newline.
fn docx_xml_text(xml: &[u8]) -> Result<String, DocumentError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event().map_err(corrupt_docx)? {
            Event::Start(e) => match e.name().as_ref() {
                "w:t" => in_text = true,
                "w:tab" => out.push('\t'),
                "w:br" | "w:cr" => out.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.name().as_ref() {
                "w:tab" => out.push('\t'),
                "w:br" | "w:cr" => out.push('\n'),
                "w:p" => out.push('\n'),
                _ => {}
            },
            Event::End(e) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => out.push_str(&t.xml10_content()),
            Event::CData(t) if in_text => out.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    out.push_str(s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    use std::io::Write;

    /// A one-page PDF; `lines` are drawn with Helvetica (none: an image-only page), `encrypt` adds a trailer
    /// `/Encrypt` entry pointing at a standard-handler dictionary.
    pub(crate) fn pdf(lines: &[&str], encrypt: bool) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
        });
        let resources_id =
            doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
        let mut ops = Vec::new();
        if lines.is_empty() {
            // An "image" page: a filled rectangle, no text operators.
            ops.push(Operation::new(
                "re",
                vec![10.into(), 10.into(), 100.into(), 100.into()],
            ));
            ops.push(Operation::new("f", vec![]));
        }
        for (i, line) in lines.iter().enumerate() {
            ops.push(Operation::new("BT", vec![]));
            ops.push(Operation::new("Tf", vec!["F1".into(), 12.into()]));
            ops.push(Operation::new(
                "Td",
                vec![50.into(), (750 - 20 * i as i64).into()],
            ));
            ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            ops.push(Operation::new("ET", vec![]));
        }
        let content = Content { operations: ops }
            .encode()
            .expect("content encodes");
        let content_id = doc.add_object(Stream::new(dictionary! {}, content));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
                "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        if encrypt {
            let enc = doc.add_object(dictionary! {
                "Filter" => "Standard", "V" => 1, "R" => 2, "Length" => 40, "P" => -44,
                "O" => Object::string_literal(vec![0u8; 32]), "U" => Object::string_literal(vec![1u8; 32]),
            });
            doc.trailer.set("Encrypt", enc);
            doc.trailer.set(
                "ID",
                vec![
                    Object::string_literal(vec![7u8; 16]),
                    Object::string_literal(vec![7u8; 16]),
                ],
            );
        }
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("in-memory save");
        out
    }

    pub(crate) fn docx(paragraphs: &[&str], with_document_xml: bool) -> Vec<u8> {
        let mut body = String::new();
        for p in paragraphs {
            body.push_str("<w:p><w:r>");
            for (i, part) in p.split('\t').enumerate() {
                if i > 0 {
                    body.push_str("<w:tab/>");
                }
                body.push_str(&format!("<w:t xml:space=\"preserve\">{part}</w:t>"));
            }
            body.push_str("</w:r></w:p>");
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
             <w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\">\
             <w:body>{body}</w:body></w:document>"
        );
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("[Content_Types].xml", opts)
            .expect("zip entry");
        w.write_all(b"<Types/>").expect("zip write");
        let name = if with_document_xml {
            "word/document.xml"
        } else {
            "xl/workbook.xml"
        };
        w.start_file(name, opts).expect("zip entry");
        w.write_all(xml.as_bytes()).expect("zip write");
        w.finish().expect("zip finish").into_inner()
    }

    #[test]
    fn pdf_text_is_extracted() {
        let bytes = pdf(
            &["Jane Doe", "Senior engineer: Rust, Python, Kubernetes"],
            false,
        );
        let doc = extract_text(&bytes, DEFAULT_MAX_BYTES).expect("valid PDF");
        assert_eq!(doc.kind, DocumentKind::Pdf);
        assert_eq!(doc.pages, 1);
        assert!(doc.text.contains("Jane Doe"), "{:?}", doc.text);
        assert!(
            doc.text.contains("Rust, Python, Kubernetes"),
            "{:?}",
            doc.text
        );
    }

    #[test]
    fn encrypted_pdf_is_refused() {
        let bytes = pdf(&["secret"], true);
        assert_eq!(
            extract_text(&bytes, DEFAULT_MAX_BYTES),
            Err(DocumentError::Encrypted)
        );
        assert!(DocumentError::Encrypted.to_string().contains("encrypted"));
    }

    #[test]
    fn image_only_pdf_has_no_text() {
        let bytes = pdf(&[], false);
        let err = extract_text(&bytes, DEFAULT_MAX_BYTES).expect_err("no text");
        assert_eq!(err, DocumentError::NoText);
        assert_eq!(
            err.to_string(),
            "document contains no extractable text (scanned image?)"
        );
    }

    #[test]
    fn docx_paragraphs_become_lines() {
        let bytes = docx(&["Jane Doe", "Skills:\tRust &amp; Go", "Kubernetes"], true);
        let doc = extract_text(&bytes, DEFAULT_MAX_BYTES).expect("valid DOCX");
        assert_eq!(doc.kind, DocumentKind::Docx);
        assert_eq!(doc.text, "Jane Doe\nSkills:\tRust & Go\nKubernetes\n");
    }

    #[test]
    fn zip_without_document_xml_is_unsupported() {
        let bytes = docx(&["x"], false);
        assert!(matches!(
            extract_text(&bytes, DEFAULT_MAX_BYTES),
            Err(DocumentError::Unsupported(_))
        ));
    }

    #[test]
    fn plain_text_and_binary() {
        let doc = extract_text("\u{feff}Rust developer\r\nBerlin".as_bytes(), 1000).expect("utf-8");
        assert_eq!(doc.kind, DocumentKind::Text);
        assert_eq!(doc.text, "Rust developer\nBerlin");
        assert!(matches!(
            extract_text(&[0xff, 0xfe, 0x00, 0x81], 1000),
            Err(DocumentError::Unsupported(_))
        ));
        assert!(matches!(
            extract_text(&[1, 2, 3, 4, 5, 6, 0, 0], 1000),
            Err(DocumentError::Unsupported(_))
        ));
        assert_eq!(extract_text(b"  \n", 1000), Err(DocumentError::Empty));
    }

    #[test]
    fn size_limit_is_enforced() {
        assert_eq!(
            extract_text(b"hello world", 5),
            Err(DocumentError::TooLarge { size: 11, limit: 5 })
        );
    }

    #[test]
    fn truncated_documents_are_errors_not_panics() {
        let pdf_bytes = pdf(&["Rust engineer"], false);
        let docx_bytes = docx(&["Rust engineer"], true);
        for bytes in [&pdf_bytes, &docx_bytes] {
            // From 8 bytes on: a shorter prefix no longer carries the magic and is (rightly) read as text.
            for cut in (8..bytes.len()).step_by(7) {
                let r = extract_text(&bytes[..cut], DEFAULT_MAX_BYTES);
                // A PDF cut after its last text may still parse (lopdf rebuilds a missing xref); anything else errors.
                if let Ok(doc) = r {
                    assert!(doc.text.contains("Rust"), "cut {cut}: {:?}", doc.text);
                }
            }
            let cut = &bytes[..bytes.len() / 2];
            assert!(extract_text(cut, DEFAULT_MAX_BYTES).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic pseudo-random inputs, some starting with the PDF / zip magic.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..300 {
            let len = (next() % 2048) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            let magic: &[u8] = match i % 3 {
                0 => b"%PDF-1.5\n",
                1 => b"PK\x03\x04",
                _ => b"",
            };
            bytes.splice(0..0, magic.iter().copied());
            let r = extract_text(&bytes, DEFAULT_MAX_BYTES);
            assert!(r.is_err() || i % 3 == 2, "input {i} unexpectedly parsed");
        }
    }
}
