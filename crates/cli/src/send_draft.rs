//! The message `mailroom send` builds: mail-builder does the MIME structure and RFC 2047 encoding.

use std::path::PathBuf;

use mail_builder::headers::address::Address as MbAddress;
use mail_builder::MessageBuilder;
use mailroom_proto::Address;

use super::util::{guess_content_type, id_domain, make_message_id};

/// The parts of a message `mailroom send` builds.
pub(crate) struct Draft {
    pub from: (Option<String>, Address),
    pub to: Vec<(Option<String>, Address)>,
    pub cc: Vec<(Option<String>, Address)>,
    pub subject: Option<String>,
    pub body: String,
    pub attachments: Vec<(PathBuf, Vec<u8>)>,
}

fn mb_address(a: &(Option<String>, Address)) -> MbAddress<'static> {
    match &a.0 {
        Some(name) => MbAddress::new_address(Some(name.clone()), a.1.to_string()),
        None => MbAddress::new_address(None::<String>, a.1.to_string()),
    }
}

impl Draft {
    /// The RFC 5322 message with Date and Message-ID, CRLF line ends.
    pub fn build(self) -> std::io::Result<Vec<u8>> {
        let mut b = MessageBuilder::new()
            .from(mb_address(&self.from))
            .message_id(make_message_id(&id_domain(&self.from.1)))
            .date(mail_builder::headers::date::Date::now());
        if !self.to.is_empty() {
            b = b.to(MbAddress::new_list(self.to.iter().map(mb_address).collect()));
        }
        if !self.cc.is_empty() {
            b = b.cc(MbAddress::new_list(self.cc.iter().map(mb_address).collect()));
        }
        if let Some(s) = self.subject {
            b = b.subject(s);
        }
        b = b.text_body(self.body);
        for (path, bytes) in self.attachments {
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "attachment".into());
            b = b.attachment(guess_content_type(&path), name, bytes);
        }
        b.write_to_vec()
    }
}
