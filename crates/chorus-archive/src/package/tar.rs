//! POSIX tar, streamed: members are written straight into the output with
//! their SHA-256 computed on the way (long names get a PAX `path` record,
//! so no name is ever truncated), and read back member by member without
//! holding one in memory.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// The largest PAX extended header read (a long name needs a few hundred bytes).
const PAX_MAX: u64 = 64 * 1024;

/// Sizes from here on do not fit the ustar size field (11 octal digits).
const SIZE_FIELD_MAX: u64 = 1 << 33;

/// The longest name a plain ustar header holds.
const NAME_MAX: usize = 99;

fn header(name: &[u8], size: u64, mtime_secs: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(NAME_MAX);
    h[..n].copy_from_slice(&name[..n]);
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    put(&mut h, 100, 8, 0o644);
    put(&mut h, 108, 8, 0);
    put(&mut h, 116, 8, 0);
    put(&mut h, 124, 12, size);
    put(&mut h, 136, 12, mtime_secs);
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (512 - size % 512) % 512;
    out.write_all(&vec![0u8; rest as usize])
}

/// A tar being written.
pub struct TarWriter<W: Write> {
    out: W,
    mtime_secs: u64,
}

impl<W: Write> TarWriter<W> {
    /// A tar whose members carry `mtime_secs`.
    pub fn new(out: W, mtime_secs: u64) -> TarWriter<W> {
        TarWriter { out, mtime_secs }
    }

    /// Appends a member of `size` bytes read from `data`; returns its
    /// SHA-256 (hex).
    pub fn append(&mut self, name: &str, size: u64, data: &mut impl Read) -> io::Result<String> {
        let big = size >= SIZE_FIELD_MAX;
        if name.len() > NAME_MAX || big {
            // A PAX extended header carries the whole name, and a size the
            // 11 octal digits of the ustar field cannot (8 GiB and more).
            let mut record = Vec::new();
            if name.len() > NAME_MAX {
                record.extend(pax_record("path", name));
            }
            if big {
                record.extend(pax_record("size", &size.to_string()));
            }
            self.out.write_all(&header(
                b"././@PaxHeader",
                record.len() as u64,
                self.mtime_secs,
                b'x',
            ))?;
            self.out.write_all(&record)?;
            pad(&mut self.out, record.len() as u64)?;
        }
        let field = if big { 0 } else { size };
        self.out
            .write_all(&header(name.as_bytes(), field, self.mtime_secs, b'0'))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name} ended early"),
                ));
            }
            h.update(&buf[..n]);
            self.out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        pad(&mut self.out, size)?;
        Ok(crate::chain::hex(&h.finalize()))
    }

    /// Appends a member held in memory; returns its SHA-256 (hex).
    pub fn append_bytes(&mut self, name: &str, data: &[u8]) -> io::Result<String> {
        self.append(name, data.len() as u64, &mut &data[..])
    }

    /// Writes the end-of-archive blocks; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A PAX record: "<len> <key>=<value>\n", the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// One member read back: its name and size; its bytes follow in the reader.
pub struct Member {
    /// The full name (from a PAX record when there was one).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Reads a tar member by member.
pub struct TarReader<R: Read> {
    input: R,
    /// Bytes of the current member not yet consumed, and its padding.
    left: u64,
    padding: u64,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn octal(field: &[u8]) -> io::Result<u64> {
    let s: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    u64::from_str_radix(s.trim(), 8).map_err(|_| bad(format!("bad octal field {s:?}")))
}

impl<R: Read> TarReader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> TarReader<R> {
        TarReader {
            input,
            left: 0,
            padding: 0,
        }
    }

    /// Skips the rest of the current member, then reads the next header;
    /// `None` at the end of the archive.
    pub fn next_member(&mut self) -> io::Result<Option<Member>> {
        io::copy(
            &mut (&mut self.input).take(self.left + self.padding),
            &mut io::sink(),
        )?;
        self.left = 0;
        self.padding = 0;
        let mut long_name: Option<String> = None;
        let mut long_size: Option<u64> = None;
        loop {
            let mut h = [0u8; 512];
            self.input.read_exact(&mut h)?;
            if h.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let stored = octal(&h[148..156])?;
            let mut check = h;
            check[148..156].copy_from_slice(b"        ");
            if stored != check.iter().map(|b| u64::from(*b)).sum::<u64>() {
                return Err(bad("a tar header's checksum does not match"));
            }
            let size = octal(&h[124..136])?;
            let padding = (512 - size % 512) % 512;
            match h[156] {
                b'x' => {
                    // The size comes from the file: check it before allocating.
                    if size > PAX_MAX {
                        return Err(bad("a PAX header over 64 KiB"));
                    }
                    let mut rec = vec![0u8; size as usize];
                    self.input.read_exact(&mut rec)?;
                    io::copy(&mut (&mut self.input).take(padding), &mut io::sink())?;
                    long_name = pax_value(&rec, "path");
                    long_size = pax_value(&rec, "size").and_then(|v| v.parse().ok());
                }
                b'0' | 0 => {
                    let mut name = String::from_utf8_lossy(&h[..100])
                        .trim_end_matches('\0')
                        .to_owned();
                    let prefix = String::from_utf8_lossy(&h[345..500])
                        .trim_end_matches('\0')
                        .to_owned();
                    if !prefix.is_empty() {
                        name = format!("{prefix}/{name}");
                    }
                    let size = long_size.take().unwrap_or(size);
                    self.left = size;
                    self.padding = (512 - size % 512) % 512;
                    return Ok(Some(Member {
                        name: long_name.take().unwrap_or(name),
                        size,
                    }));
                }
                other => return Err(bad(format!("unexpected tar member type {:?}", other as char))),
            }
        }
    }

    /// Reads from the current member.
    pub fn member(&mut self) -> impl Read + '_ {
        MemberRead { tar: self }
    }
}

struct MemberRead<'a, R: Read> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for MemberRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.tar.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.tar.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar ends inside a member",
            ));
        }
        self.tar.left -= n as u64;
        Ok(n)
    }
}

fn pax_value(rec: &[u8], key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    String::from_utf8_lossy(rec).lines().find_map(|l| {
        let (_, kv) = l.split_once(' ')?;
        kv.strip_prefix(prefix.as_str()).map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_with_long_names_and_checksums() {
        let long = format!("eml/{}/x.eml", "a".repeat(150));
        let mut t = TarWriter::new(Vec::new(), 0);
        let h1 = t.append_bytes("a.txt", b"abc").expect("append");
        t.append_bytes(&long, &vec![7u8; 1000]).expect("append");
        let bytes = t.finish().expect("finish");
        assert_eq!(h1, crate::chain::content_hash_bytes(b"abc"));
        let mut r = TarReader::new(&bytes[..]);
        let m = r.next_member().expect("read").expect("a member");
        assert_eq!((m.name.as_str(), m.size), ("a.txt", 3));
        let mut s = String::new();
        r.member().read_to_string(&mut s).expect("content");
        assert_eq!(s, "abc");
        let m = r.next_member().expect("read").expect("a member");
        assert_eq!((m.name, m.size), (long, 1000), "the long name is whole");
        assert!(r.next_member().expect("read").is_none());
        // A PAX header claiming a terabyte is refused, not allocated.
        let mut huge = Vec::new();
        huge.extend_from_slice(&header(b"././@PaxHeader", 1 << 32, 0, b'x'));
        huge.extend_from_slice(&[0u8; 1024]);
        let e = TarReader::new(&huge[..]).next_member().err().expect("refused");
        assert!(e.to_string().contains("PAX header over"), "{e}");
        // A size from a PAX record (how members of 8 GiB and more are
        // written) wins over the ustar field.
        let rec = pax_record("size", "5");
        let mut big = Vec::new();
        big.extend_from_slice(&header(b"././@PaxHeader", rec.len() as u64, 0, b'x'));
        big.extend_from_slice(&rec);
        big.resize(big.len().div_ceil(512) * 512, 0);
        big.extend_from_slice(&header(b"big.bin", 0, 0, b'0'));
        big.extend_from_slice(b"12345");
        big.resize(big.len().div_ceil(512) * 512 + 1024, 0);
        let mut r = TarReader::new(&big[..]);
        let m = r.next_member().expect("read").expect("a member");
        assert_eq!((m.name.as_str(), m.size), ("big.bin", 5));
        let mut s = String::new();
        r.member().read_to_string(&mut s).expect("content");
        assert_eq!(s, "12345");
        assert!(r.next_member().expect("read").is_none());
        // A flipped header byte is caught by the checksum.
        let mut broken = bytes.clone();
        broken[3] ^= 1;
        assert!(TarReader::new(&broken[..]).next_member().is_err());
    }
}
