//! Many datagrams per system call: a socket's batch of receive slots, and
//! the calls that fill it and send answers from it.
//!
//! On Linux one `recvmmsg(2)` fills up to a batch of slots, each with its
//! datagram and its sender's address, and one `sendmmsg(2)` sends the
//! chosen answers from the same slots back to the same addresses (an echo
//! is its datagram: nothing is copied). Consecutive answers to the same
//! peer go as one message cut into datagrams by the kernel (UDP GSO,
//! `UDP_SEGMENT`): most of a datagram's cost on the way out is routing and
//! building its packet, and that is then paid once per run of answers to
//! a peer instead of once per answer. The peer receives the same
//! datagrams, in the same order.
//!
//! The other way too: an echo socket asks for coalesced datagrams
//! (`UDP_GRO`), so a run of datagrams from one sender that came as one
//! packet (a client sending with GSO; a network card's GRO) is received as
//! one, into one slot, with the size of its segments. A slot then holds
//! several datagrams; each is still a datagram to the loop (counted,
//! checked by the guard, answered), and a [`Pick`] names one by its slot,
//! offset and length. Elsewhere the same [`Batch`] is
//! filled by a `recv_from` per datagram and answered by a `send_to` per
//! answer (`portable`, below), with the same results and twice the calls.
//!
//! # Why the slots are 64 KiB each, and what that costs
//!
//! A datagram larger than its slot is cut short by the kernel, and which
//! datagram comes next is unknown, so every slot holds the largest UDP
//! payload (65,527 bytes over IPv6). The slots are one allocation made
//! once per socket, zeroed by the kernel on first touch: a page of memory
//! is spent only where a datagram landed, so small datagrams cost about a
//! page per slot (32 slots of 64-byte datagrams: 128 KiB), and a socket that
//! only ever sees one datagram at a time about one page in all.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

/// The largest batch a socket can be given (`--udp-batch`).
pub(crate) const MAX_BATCH: usize = 64;

/// Bytes per slot: the largest UDP payload, rounded up.
pub(crate) const SLOT: usize = 64 * 1024;

/// What a batch is filled from and answered to: a UDP socket, or in tests
/// a scripted one.
pub(crate) trait Datagrams {
    /// Fills `batch` from its first slot with the datagrams waiting, up to
    /// its size; how many (0: none waiting).
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<usize>;

    /// Sends the answers `picks` names, in order, each to the sender of
    /// its slot; how many went out (at least one), or the error of the
    /// first.
    fn send_batch(&self, batch: &Batch, picks: &[Pick]) -> io::Result<usize>;

    /// Sends one datagram (a queued answer).
    fn send_one(&self, data: &[u8], peer: SocketAddr) -> io::Result<usize>;
}

/// A socket's receive slots, allocated once.
#[derive(Debug)]
pub(crate) struct Batch {
    /// `size` slots of [`SLOT`] bytes.
    bufs: Box<[u8]>,
    /// Bytes in each slot: its datagram(s), or its answer.
    lens: Box<[usize]>,
    /// The size of the datagrams coalesced in each slot (all but the last
    /// are this long); its length when it holds one.
    segs: Box<[usize]>,
    /// Each slot's sender.
    peers: Box<[SocketAddr]>,
    /// Each slot's sender as the kernel wrote it, to answer to as is.
    #[cfg(target_os = "linux")]
    names: Box<[libc::sockaddr_storage]>,
    #[cfg(target_os = "linux")]
    name_lens: Box<[libc::socklen_t]>,
    /// The headers a receive hands the kernel, one per slot.
    #[cfg(target_os = "linux")]
    headers: linux::RecvHeaders,
    /// Slots filled by the last receive.
    filled: usize,
    /// Answers to one peer may go as one message of segments (UDP GSO);
    /// off for good once the socket's path said it cannot.
    #[cfg(target_os = "linux")]
    gso: std::cell::Cell<bool>,
}

/// One datagram in a batch: its slot, where it starts there, its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub(crate) slot: u8,
    pub(crate) at: u32,
    pub(crate) len: u32,
}

/// Asks the kernel to hand runs of datagrams from one sender to `socket`
/// as one coalesced message (`UDP_GRO`, Linux 5.0); where it cannot, they
/// come one by one as before.
pub(crate) fn accept_coalesced(socket: &mio::net::UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: a valid option value of its declared size, on a socket
        // this borrow keeps open.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            log::debug!("udp: no UDP_GRO: {}", io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// A sender that no datagram has: port 0, which the loop guard refuses.
const NOBODY: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Batch {
    /// A batch of `size` slots (1 to [`MAX_BATCH`]).
    pub(crate) fn new(size: usize) -> Batch {
        let size = size.clamp(1, MAX_BATCH);
        Batch {
            bufs: vec![0; size * SLOT].into_boxed_slice(),
            lens: vec![0; size].into_boxed_slice(),
            segs: vec![0; size].into_boxed_slice(),
            peers: vec![NOBODY; size].into_boxed_slice(),
            #[cfg(target_os = "linux")]
            // SAFETY: `sockaddr_storage` is plain old data; all zeroes is
            // a valid (empty, family 0) value.
            names: vec![unsafe { std::mem::zeroed() }; size].into_boxed_slice(),
            #[cfg(target_os = "linux")]
            name_lens: vec![0; size].into_boxed_slice(),
            #[cfg(target_os = "linux")]
            headers: linux::RecvHeaders::new(size),
            filled: 0,
            #[cfg(target_os = "linux")]
            gso: std::cell::Cell::new(true),
        }
    }

    /// Slots: the most datagrams one receive takes.
    pub(crate) fn size(&self) -> usize {
        self.lens.len()
    }

    /// Datagrams the last receive took.
    #[cfg(test)]
    pub(crate) fn filled(&self) -> usize {
        self.filled
    }

    /// The datagrams in slot `i`, each as a [`Pick`], in order (none for
    /// an empty slot only if it holds no datagram at all: an empty
    /// datagram is one pick of length 0).
    pub(crate) fn datagrams(&self, i: usize) -> impl Iterator<Item = Pick> + use<> {
        let (len, seg) = (self.lens[i], self.segs[i].max(1));
        let count = len.div_ceil(seg).max(1);
        (0..count).map(move |k| {
            let at = k * seg;
            Pick {
                slot: i as u8,
                at: at as u32,
                len: seg.min(len - at) as u32,
            }
        })
    }

    /// The bytes `pick` names.
    pub(crate) fn bytes(&self, pick: Pick) -> &[u8] {
        &self.bufs[usize::from(pick.slot) * SLOT + pick.at as usize..][..pick.len as usize]
    }

    /// Who sent slot `i`'s datagram.
    pub(crate) fn peer(&self, i: usize) -> SocketAddr {
        self.peers[i]
    }

    /// Writes `answer` (daytime's line) over the datagram `pick` names; the
    /// pick that names the answer. Only for a service whose socket does not
    /// coalesce, so that the slot holds that one datagram.
    pub(crate) fn set_answer(&mut self, pick: Pick, answer: &[u8]) -> Pick {
        let i = usize::from(pick.slot);
        let n = answer.len().min(SLOT);
        self.bufs[i * SLOT..][..n].copy_from_slice(&answer[..n]);
        self.lens[i] = n;
        self.segs[i] = n;
        Pick {
            slot: pick.slot,
            at: 0,
            len: n as u32,
        }
    }

    /// Scripted receives: puts a datagram from `peer` in the next slot;
    /// false when the batch is full.
    #[cfg(test)]
    pub(crate) fn push(&mut self, data: &[u8], peer: SocketAddr) -> bool {
        let i = self.filled;
        if i == self.size() {
            return false;
        }
        self.filled += 1;
        self.peers[i] = peer;
        self.bufs[i * SLOT..][..data.len()].copy_from_slice(data);
        self.lens[i] = data.len();
        self.segs[i] = data.len();
        true
    }

    /// Scripted coalesced receives: `data` in the next slot, as datagrams
    /// of `seg` bytes.
    #[cfg(test)]
    pub(crate) fn push_coalesced(&mut self, data: &[u8], seg: usize, peer: SocketAddr) -> bool {
        let pushed = self.push(data, peer);
        if pushed {
            self.segs[self.filled - 1] = seg;
        }
        pushed
    }

    /// Empties the batch before a scripted receive.
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        self.filled = 0;
    }
}

impl Datagrams for mio::net::UdpSocket {
    #[cfg(target_os = "linux")]
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<usize> {
        linux::recv(self.as_raw_fd(), batch)
    }

    #[cfg(target_os = "linux")]
    fn send_batch(&self, batch: &Batch, picks: &[Pick]) -> io::Result<usize> {
        let gso = batch.gso.get();
        match linux::send(self.as_raw_fd(), batch, picks, gso) {
            Err(e) if gso && e.kind() != io::ErrorKind::WouldBlock => {
                // The first message failed, and it may have been one of
                // segments that the path cannot take (no checksum offload:
                // EIO; an answer larger than the path's MTU: EINVAL). Sent
                // one by one, each answer meets its own fate; a device
                // that cannot segment at all is not asked again.
                if e.raw_os_error() == Some(libc::EIO) {
                    batch.gso.set(false);
                }
                linux::send(self.as_raw_fd(), batch, picks, false)
            }
            done => done,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_batch(&self, batch: &mut Batch) -> io::Result<usize> {
        portable::recv(self, batch)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_batch(&self, batch: &Batch, picks: &[Pick]) -> io::Result<usize> {
        portable::send(self, batch, picks)
    }

    fn send_one(&self, data: &[u8], peer: SocketAddr) -> io::Result<usize> {
        self.send_to(data, peer)
    }
}

/// `recvmmsg(2)` and `sendmmsg(2)`.
#[cfg(target_os = "linux")]
mod linux {
    use super::{Batch, MAX_BATCH, NOBODY, Pick, SLOT};
    use std::io;
    use std::mem::{MaybeUninit, size_of};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;

    /// Message headers for one send, built on the stack, only as many as
    /// the call uses.
    type Headers = [MaybeUninit<libc::mmsghdr>; MAX_BATCH];

    /// Room for one `UDP_GRO` control message (`CMSG_SPACE(4)`), aligned.
    type GroControl = [u64; 4];

    /// Iovecs one send builds at most (a datagram each): 4 KiB of stack.
    const SEND_IOVECS: usize = 256;

    /// A receive's message headers, one per slot, with their iovecs and
    /// control buffers, allocated (zeroed) once with the batch.
    ///
    /// Built afresh for every call, `size` headers cost more than the
    /// datagram when one comes alone (about 1,000 instructions: zeroing
    /// and copying 64-byte headers and 2 KiB of control room). Kept, a
    /// call only sets the fields that point somewhere or that the kernel
    /// overwrote, in place. The pointers are set before each call, from
    /// the batch's boxes as they are then, so none is kept across calls.
    pub(super) struct RecvHeaders {
        hdrs: Box<[libc::mmsghdr]>,
        iovs: Box<[libc::iovec]>,
        controls: Box<[GroControl]>,
    }

    // SAFETY: the pointers in the headers are only ever set just before a
    // call, to memory of the same batch, and only the kernel follows them,
    // during that call; at rest they are plain numbers, read by no one.
    // The batch (and its headers) may then move to another thread.
    unsafe impl Send for RecvHeaders {}

    impl std::fmt::Debug for RecvHeaders {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecvHeaders")
                .field("slots", &self.hdrs.len())
                .finish_non_exhaustive()
        }
    }

    impl RecvHeaders {
        pub(super) fn new(size: usize) -> RecvHeaders {
            RecvHeaders {
                // SAFETY: all-zero `mmsghdr`s and `iovec`s are valid (null
                // pointers, no lengths, no flags).
                hdrs: (0..size).map(|_| unsafe { std::mem::zeroed() }).collect(),
                // SAFETY: as above.
                iovs: (0..size).map(|_| unsafe { std::mem::zeroed() }).collect(),
                controls: vec![[0; 4]; size].into_boxed_slice(),
            }
        }
    }

    pub(super) fn recv(fd: RawFd, batch: &mut Batch) -> io::Result<usize> {
        batch.filled = 0;
        let size = batch.size();
        let bufs = batch.bufs.as_mut_ptr();
        let names = batch.names.as_mut_ptr();
        let RecvHeaders {
            hdrs,
            iovs,
            controls,
        } = &mut batch.headers;
        let (iovs, controls) = (iovs.as_mut_ptr(), controls.as_mut_ptr());
        for (i, hdr) in hdrs.iter_mut().enumerate() {
            // SAFETY: `i` < `size`, the length of `iovs`, `controls` and
            // `names`, and slot `i` lies inside `bufs` (`size * SLOT`
            // bytes).
            let (iov, name, control, slot) = unsafe {
                (
                    iovs.add(i),
                    names.add(i),
                    controls.add(i),
                    bufs.add(i * SLOT),
                )
            };
            // SAFETY: `iov` is in bounds (above) and initialized.
            unsafe {
                (*iov).iov_base = slot.cast();
                (*iov).iov_len = SLOT;
            }
            let msg = &mut hdr.msg_hdr;
            msg.msg_name = name.cast();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.cast();
            msg.msg_controllen = size_of::<GroControl>() as _;
        }
        // SAFETY: `size` headers, each pointing at its own slot, its own
        // address storage, its own control buffer and its own iovec, all
        // alive and not otherwise borrowed until the call returns. No
        // timeout: the socket is non-blocking, so the call takes what is
        // queued and returns.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                size as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (i, hdr) in batch.headers.hdrs[..got].iter().enumerate() {
            let len = (hdr.msg_len as usize).min(SLOT);
            batch.lens[i] = len;
            batch.segs[i] = coalesced(&hdr.msg_hdr).unwrap_or(len);
            batch.name_lens[i] = hdr.msg_hdr.msg_namelen;
            batch.peers[i] = socket_addr(&batch.names[i], hdr.msg_hdr.msg_namelen);
        }
        batch.filled = got;
        Ok(got)
    }

    /// The segment size of a coalesced message (`UDP_GRO`), if it is one.
    fn coalesced(msg: &libc::msghdr) -> Option<usize> {
        // SAFETY: the kernel wrote `msg_controllen` bytes of control
        // messages into the buffer `msg_control` points at (ours, alive);
        // the macros walk only those, and the data of a `UDP_GRO` message
        // is an `int`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_UDP
                || (*cmsg).cmsg_type != libc::UDP_GRO
            {
                return None;
            }
            let seg = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
            usize::try_from(seg).ok().filter(|&seg| seg > 0)
        }
    }

    /// Sends the answers `picks` names; how many of them went out.
    ///
    /// With `gso`, consecutive answers to one peer go as one message with
    /// a `UDP_SEGMENT` size (UDP GSO, Linux 4.18): the kernel routes and
    /// builds one packet and cuts it into datagrams of that size at the
    /// last moment. A run ends at another peer, at a longer answer, after
    /// a shorter one (only the last segment may be short), or at the
    /// limits of one message.
    ///
    /// A lone answer (the common case at low load) goes by `sendto(2)`:
    /// the kernel takes its address and bytes directly, without copying in
    /// and walking a message header and an iovec array as `sendmmsg` does.
    pub(super) fn send(fd: RawFd, batch: &Batch, picks: &[Pick], gso: bool) -> io::Result<usize> {
        if let [pick] = picks {
            return send_one(fd, batch, *pick);
        }
        let mut hdrs: Headers = [const { MaybeUninit::uninit() }; MAX_BATCH];
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; SEND_IOVECS];
        // Written only for the messages that carry one.
        let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
        // Answers per message (at most `GSO_MAX_SEGMENTS`).
        let mut runs = [0u8; MAX_BATCH];
        let n = picks.len().min(SEND_IOVECS);
        let (mut k, mut m) = (0, 0);
        while k < n && m < MAX_BATCH {
            let first = picks[k];
            let slot = usize::from(first.slot);
            let seg = first.len as usize;
            let mut run = 1;
            if gso && seg > 0 {
                let mut total = seg;
                while k + run < n && run < GSO_MAX_SEGMENTS {
                    let next = picks[k + run];
                    let len = next.len as usize;
                    if batch.peers[usize::from(next.slot)] != batch.peers[slot]
                        || len == 0
                        || len > seg
                        || total + len > GSO_MAX_BYTES
                    {
                        break;
                    }
                    run += 1;
                    total += len;
                    if len < seg {
                        break;
                    }
                }
            }
            for (r, &pick) in picks[k..k + run].iter().enumerate() {
                let data = batch.bytes(pick);
                iovs[k + r].write(libc::iovec {
                    iov_base: data.as_ptr().cast_mut().cast(),
                    iov_len: data.len(),
                });
            }
            // SAFETY: as in `recv`.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = (&raw const batch.names[slot]).cast_mut().cast();
            hdr.msg_hdr.msg_namelen = batch.name_lens[slot];
            hdr.msg_hdr.msg_iov = iovs[k].as_mut_ptr();
            hdr.msg_hdr.msg_iovlen = run as _;
            if run > 1 {
                let mut control = Control::default();
                control.header.cmsg_len = CONTROL_LEN as _;
                control.header.cmsg_level = libc::SOL_UDP;
                control.header.cmsg_type = libc::UDP_SEGMENT;
                control.segment = seg as u16;
                hdr.msg_hdr.msg_control = (&raw mut *controls[m].write(control)).cast();
                hdr.msg_hdr.msg_controllen = size_of::<Control>() as _;
            }
            hdrs[m].write(hdr);
            runs[m] = run as u8;
            k += run;
            m += 1;
        }
        // SAFETY: the first `m` headers are initialized; each points at
        // `run` initialized iovecs over slots of `batch` (which the shared
        // borrow keeps alive and unchanged), at an address of `batch`, and
        // at its own control message or none; the kernel only reads them
        // (and writes `msg_len` into the headers, which are ours).
        let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().cast(), m as libc::c_uint, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(runs[..sent as usize].iter().map(|&r| usize::from(r)).sum())
    }

    /// Sends the one answer `pick` names to its slot's sender.
    fn send_one(fd: RawFd, batch: &Batch, pick: Pick) -> io::Result<usize> {
        let slot = usize::from(pick.slot);
        let data = batch.bytes(pick);
        // SAFETY: `data` and the slot's address (`name_lens[slot]` bytes
        // of it written by the kernel) belong to `batch`, which the shared
        // borrow keeps alive and unchanged; the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                0,
                (&raw const batch.names[slot]).cast(),
                batch.name_lens[slot],
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(1)
    }

    /// The most segments one GSO message may carry (the kernel's
    /// `UDP_MAX_SEGMENTS`).
    const GSO_MAX_SEGMENTS: usize = 64;

    const _: () = assert!(GSO_MAX_SEGMENTS <= u8::MAX as usize);

    /// The most payload one GSO message may carry: one IPv4 datagram's.
    const GSO_MAX_BYTES: usize = 65_507;

    /// A `UDP_SEGMENT` control message: its header, then the segment size
    /// (a `u16`), laid out as `CMSG_SPACE(2)`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Control {
        header: libc::cmsghdr,
        segment: u16,
        _pad: [u8; 6],
    }

    /// `CMSG_LEN(2)`: the header and the segment size.
    const CONTROL_LEN: usize = size_of::<libc::cmsghdr>() + 2;

    const _: () = assert!(
        size_of::<libc::cmsghdr>().is_multiple_of(8) && size_of::<Control>() == CONTROL_LEN + 6
    );

    impl Default for Control {
        fn default() -> Control {
            // SAFETY: plain old data; all zeroes is a valid (empty) value,
            // whatever padding fields the C library's `cmsghdr` has.
            unsafe { std::mem::zeroed() }
        }
    }

    /// The sender the kernel wrote, as a `SocketAddr` (a family other than
    /// IPv4 or IPv6 cannot come from a UDP socket; it reads as port 0,
    /// which the guard refuses).
    fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> SocketAddr {
        let len = len as usize;
        match i32::from(name.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a `sockaddr_in` (family and
                // length say so) into storage large and aligned enough.
                let a = unsafe { &*(&raw const *name).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a `sockaddr_in6`.
                let a = unsafe { &*(&raw const *name).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let port = u16::from_be(a.sin6_port);
                SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                ))
            }
            _ => NOBODY,
        }
    }
}

/// The same batch, a datagram per call, where there is no `recvmmsg`.
#[cfg(any(test, not(target_os = "linux")))]
pub(crate) mod portable {
    use super::{Batch, Pick, SLOT};
    use std::io;

    /// Receives datagrams one `recv_from` at a time until the batch is
    /// full or none is waiting.
    pub(crate) fn recv(socket: &mio::net::UdpSocket, batch: &mut Batch) -> io::Result<usize> {
        batch.filled = 0;
        while batch.filled < batch.size() {
            let i = batch.filled;
            match socket.recv_from(&mut batch.bufs[i * SLOT..][..SLOT]) {
                Ok((n, peer)) => {
                    batch.lens[i] = n;
                    batch.segs[i] = n;
                    batch.peers[i] = peer;
                    batch.filled += 1;
                }
                Err(e) if batch.filled > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(batch.filled)
    }

    /// Sends the answers one `send_to` at a time, up to the first that
    /// fails.
    pub(crate) fn send(
        socket: &mio::net::UdpSocket,
        batch: &Batch,
        picks: &[Pick],
    ) -> io::Result<usize> {
        let mut sent = 0;
        for &pick in picks {
            match socket.send_to(batch.bytes(pick), batch.peer(usize::from(pick.slot))) {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}
