//! Many datagrams per system call on a connected UDP socket: `recvmmsg(2)`
//! fills a batch of slots, `sendmmsg(2)` sends a batch of staged
//! datagrams, so that the client spends two calls per [`BATCH`] datagrams
//! and can saturate a server that batches too. Elsewhere than Linux, a
//! call per datagram fills and sends the same batches.

use std::io;
use std::os::fd::RawFd;

/// Datagrams per call.
pub(crate) const BATCH: usize = 32;

/// A slot that can hold coalesced datagrams (`--udp-gro`): the most one
/// message carries.
pub(crate) const GRO_SLOT: usize = 64 * 1024;

/// Asks the kernel to hand `fd` runs of datagrams from one sender as one
/// coalesced message (`UDP_GRO`).
#[cfg(target_os = "linux")]
pub(crate) fn accept_coalesced(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid option value of its declared size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No `UDP_GRO` here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn accept_coalesced(_fd: RawFd) -> io::Result<()> {
    Err(io::Error::other("UDP_GRO is Linux's"))
}

/// `BATCH` slots of `slot` bytes each, and how many bytes each holds.
pub(crate) struct Slots {
    buf: Box<[u8]>,
    slot: usize,
    lens: [usize; BATCH],
    /// Each received slot's segment size when it holds coalesced datagrams
    /// (`--udp-gro`), else 0.
    segs: [usize; BATCH],
    /// Slots in use: received, or staged to send.
    pub(crate) n: usize,
}

impl Slots {
    pub(crate) fn new(slot: usize) -> Slots {
        Slots {
            buf: vec![0; slot * BATCH].into_boxed_slice(),
            slot,
            lens: [0; BATCH],
            segs: [0; BATCH],
            n: 0,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// Slot `i`'s bytes.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        &self.buf[i * self.slot..][..self.lens[i]]
    }

    /// Slot `i`'s length, and the size of the datagrams coalesced in it
    /// (its length if it holds one).
    pub(crate) fn shape(&self, i: usize) -> (usize, usize) {
        let len = self.lens[i];
        match self.segs[i] {
            0 => (len, len.max(1)),
            seg => (len, seg),
        }
    }

    /// Stages one more datagram of `len` bytes; its slot, to fill.
    pub(crate) fn stage(&mut self, len: usize) -> &mut [u8] {
        let i = self.n;
        self.n += 1;
        self.lens[i] = len;
        &mut self.buf[i * self.slot..][..len]
    }

    /// Receives up to a batch into the slots; how many (0: none waiting).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        let n = calls::recv(fd, &mut self.buf, self.slot, &mut self.lens, &mut self.segs)?;
        self.n = n;
        Ok(n)
    }

    /// Sends the staged datagrams from the `from`th on; how many went out
    /// (at least one), or the error of the first.
    pub(crate) fn send(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        calls::send(fd, &self.buf, self.slot, &self.lens[from..self.n], from)
    }

    /// Sends the staged datagrams from the `from`th on as one message cut
    /// into datagrams by the kernel (UDP GSO); every slot must be full
    /// (all datagrams `slot` bytes). How many went out.
    #[cfg(target_os = "linux")]
    pub(crate) fn send_segmented(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let count = (self.n - from).min((65_507 / self.slot).max(1));
        let data = &self.buf[from * self.slot..][..count * self.slot];
        #[repr(C)]
        struct Control {
            header: libc::cmsghdr,
            segment: u16,
            _pad: [u8; 6],
        }
        // SAFETY: plain old data; all zeroes is valid.
        let mut control: Control = unsafe { std::mem::zeroed() };
        control.header.cmsg_len = (std::mem::size_of::<libc::cmsghdr>() + 2) as _;
        control.header.cmsg_level = libc::SOL_UDP;
        control.header.cmsg_type = libc::UDP_SEGMENT;
        control.segment = self.slot as u16;
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: plain old data; the fields that matter are set next.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if count > 1 {
            msg.msg_control = (&raw mut control).cast();
            msg.msg_controllen = std::mem::size_of::<Control>() as _;
        }
        // SAFETY: `msg` points at `iov`, `data` and `control`, all alive
        // for the call; the kernel only reads them.
        let sent = unsafe { libc::sendmsg(fd, &msg, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(count)
    }

    /// No UDP GSO here: a datagram per call.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn send_segmented(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        self.send(fd, from)
    }
}

#[cfg(target_os = "linux")]
mod calls {
    use super::BATCH;
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;

    /// Room for one `UDP_GRO` control message (`CMSG_SPACE(4)`), aligned.
    type Control = [u64; 4];

    pub(super) fn recv(
        fd: RawFd,
        buf: &mut [u8],
        slot: usize,
        lens: &mut [usize; BATCH],
        segs: &mut [usize; BATCH],
    ) -> io::Result<usize> {
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
        let mut controls: [Control; BATCH] = [[0; 4]; BATCH];
        let base = buf.as_mut_ptr();
        for i in 0..BATCH {
            let iov = iovs[i].write(libc::iovec {
                // SAFETY: slot `i` lies inside `buf` (`slot * BATCH` bytes).
                iov_base: unsafe { base.add(i * slot) }.cast(),
                iov_len: slot,
            });
            // SAFETY: an all-zero `mmsghdr` is valid: no address, no
            // control data (the socket is connected).
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = std::mem::size_of::<Control>() as _;
            hdrs[i].write(hdr);
        }
        // SAFETY: every header is initialized and points at its own iovec
        // and slot, alive until the call returns; non-blocking socket, no
        // timeout.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast(),
                BATCH as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        for i in 0..got as usize {
            // SAFETY: initialized above.
            let hdr = unsafe { hdrs[i].assume_init_ref() };
            lens[i] = hdr.msg_len as usize;
            segs[i] = 0;
            // SAFETY: the kernel wrote `msg_controllen` bytes of control
            // messages into `controls[i]`; the macros walk only those.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
                if !cmsg.is_null()
                    && (*cmsg).cmsg_level == libc::SOL_UDP
                    && (*cmsg).cmsg_type == libc::UDP_GRO
                {
                    let seg = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                    segs[i] = seg.max(0) as usize;
                }
            }
        }
        Ok(got as usize)
    }

    pub(super) fn send(
        fd: RawFd,
        buf: &[u8],
        slot: usize,
        lens: &[usize],
        from: usize,
    ) -> io::Result<usize> {
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
        for (k, &len) in lens.iter().enumerate() {
            let data = &buf[(from + k) * slot..][..len];
            let iov = iovs[k].write(libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: len,
            });
            // SAFETY: as in `recv`.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdrs[k].write(hdr);
        }
        // SAFETY: the first `lens.len()` headers are initialized and point
        // into `buf`, which the kernel only reads.
        let sent =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().cast(), lens.len() as libc::c_uint, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

#[cfg(not(target_os = "linux"))]
mod calls {
    use super::BATCH;
    use std::io;
    use std::os::fd::RawFd;

    fn one(r: isize) -> io::Result<usize> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    pub(super) fn recv(
        fd: RawFd,
        buf: &mut [u8],
        slot: usize,
        lens: &mut [usize; BATCH],
        segs: &mut [usize; BATCH],
    ) -> io::Result<usize> {
        segs.fill(0);
        let mut n = 0;
        while n < BATCH {
            let at = &mut buf[n * slot..][..slot];
            // SAFETY: `at` is writable for `slot` bytes.
            match one(unsafe { libc::recv(fd, at.as_mut_ptr().cast(), slot, 0) }) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    pub(super) fn send(
        fd: RawFd,
        buf: &[u8],
        slot: usize,
        lens: &[usize],
        from: usize,
    ) -> io::Result<usize> {
        let mut sent = 0;
        for (k, &len) in lens.iter().enumerate() {
            let data = &buf[(from + k) * slot..][..len];
            // SAFETY: `data` is readable for `len` bytes.
            match one(unsafe { libc::send(fd, data.as_ptr().cast(), len, 0) }) {
                Ok(_) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}
