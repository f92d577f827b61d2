//! Which command (or the greeting) a reply answers: the client's name for each point of the dialogue.

use std::fmt;

use crate::extension::keyword;

/// Which command (or the greeting) a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    /// AUTH and each SASL response after a 334 (RFC 4954 §4).
    Auth,
    Mail,
    Rcpt,
    Data,
    /// The `.` that ends the message.
    EndOfData,
    Rset,
    Noop,
    Quit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Greeting => "the greeting",
            Step::Ehlo => "EHLO",
            Step::Helo => "HELO",
            Step::StartTls => keyword::STARTTLS,
            Step::Auth => keyword::AUTH,
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::EndOfData => "the end of data",
            Step::Rset => "RSET",
            Step::Noop => "NOOP",
            Step::Quit => "QUIT",
        })
    }
}
