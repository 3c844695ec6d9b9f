//! COMPRESS=DEFLATE (RFC 4978) for the connection driver: once an IMAP session has
//! answered `OK` to COMPRESS (`Action::Compress`), both directions are raw DEFLATE
//! (RFC 1951, no zlib header) for the rest of the connection, over plain TCP or TLS.
//!
//! Every write ends with a sync flush, so the client can decode each response as soon as
//! it arrives. Input is inflated at most [`MAX_INFLATED`] octets per read, the rest of
//! the compressed input kept for the next read: a few kilobytes that inflate to
//! gigabytes reach the session no faster than plain input would, and its own line and
//! literal bounds apply as before. State costs about 300 KiB per connection that
//! enables it (miniz_oxide's compressor tables and the 32 KiB window each way).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use understudy_protocol::session::READ_CHUNK;

/// Inflated octets handed on per read: one plain read's worth.
pub const MAX_INFLATED: usize = READ_CHUNK;

pub struct Deflate {
    outgoing: Compress,
    incoming: Decompress,
    /// Compressed input not inflated yet (beyond `MAX_INFLATED`).
    pending: Vec<u8>,
}

fn broken(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("COMPRESS=DEFLATE: {e}"))
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            outgoing: Compress::new(Compression::default(), false),
            incoming: Decompress::new(false),
            pending: Vec::new(),
        }
    }
}

impl Deflate {
    /// `data` compressed and sync-flushed: everything up to here is decodable.
    pub fn compress(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out: Vec<u8> = Vec::with_capacity(data.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.outgoing.total_in();
            self.outgoing
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .map_err(broken)?;
            consumed += (self.outgoing.total_in() - before) as usize;
            // The flush is complete once all input is taken and output space was left.
            if consumed == data.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Inflates `raw` (after what is pending) into `out`, at most `MAX_INFLATED` octets.
    pub fn decompress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        self.pending.extend_from_slice(raw);
        let mut consumed = 0;
        while consumed < self.pending.len() && out.len() < MAX_INFLATED {
            // A buffer of its own: `decompress_vec` fills all spare capacity, and
            // `out`'s may be larger than the bound.
            let mut chunk = Vec::with_capacity(MAX_INFLATED - out.len());
            let before = self.incoming.total_in();
            self.incoming
                .decompress_vec(&self.pending[consumed..], &mut chunk, FlushDecompress::None)
                .map_err(broken)?;
            let used = (self.incoming.total_in() - before) as usize;
            consumed += used;
            if used == 0 && chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    /// Compressed input is waiting: read no more from the socket before it is used.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_write_decodes_at_once_and_a_bomb_is_let_out_a_chunk_at_a_time() {
        let mut server = Deflate::default();
        let mut client = Deflate::default();
        let reply = server.compress(b"* OK hello\r\n").unwrap();
        let mut got = Vec::new();
        client.decompress(&reply, &mut got).unwrap();
        assert_eq!(got, b"* OK hello\r\n");
        // 10 MiB of one octet compresses to about 10 KiB.
        let bomb = client.compress(&vec![b'a'; 10 << 20]).unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut total = 0;
        let mut reads = 0;
        let mut input: &[u8] = &bomb;
        loop {
            let mut chunk = Vec::new();
            server.decompress(input, &mut chunk).unwrap();
            input = &[];
            assert!(chunk.len() <= MAX_INFLATED + 64);
            total += chunk.len();
            reads += 1;
            if !server.has_pending() && chunk.is_empty() {
                break;
            }
        }
        assert_eq!(total, 10 << 20);
        assert!(reads > 100, "{reads}");
        let mut bad = Vec::new();
        assert!(Deflate::default()
            .decompress(b"\xff\xff\xff\xff", &mut bad)
            .is_err());
    }
}
