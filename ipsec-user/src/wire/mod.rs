//! The wire layer: zero-copy views over the headers xipsec reads and writes, in the style of
//! smoltcp's `wire` module.
//!
//! Contract:
//! - A view (`Ipv6Packet`, `FragmentHeader`, `EspPacket`, `TcpPacket`, `UdpPacket`,
//!   `Icmpv6Packet`, `EthernetFrame`) wraps a buffer `T: AsRef<[u8]>`. Untrusted bytes go through
//!   `new_checked`, which checks every length the accessors rely on; after it no accessor can
//!   panic. `new_unchecked` is for a caller that has already checked (it says how in a comment).
//!   Setters exist where `T: AsMut<[u8]>` too, for the fields we rewrite in place.
//! - One bounded walk over the IPv6 extension headers, [`ExtWalk`]: it steps over hop-by-hop,
//!   routing, fragment and destination options headers (`is_walked_extension_header`), at most
//!   [`MAX_EXT_HEADERS`] of them, and yields each with its offsets; what a caller makes of a
//!   header (refuse a fragment, stop at a depth) is the caller's rule, not the walk's.
//! - The headers we build have a `Repr` with `emit`: [`Ipv6Repr`], [`FragmentRepr`],
//!   [`VirtioNetHdr`]; [`checksum`] holds the ones'-complement sums, the IPv6 pseudo-header and
//!   the incremental update of RFC 1624.
//! - Protocol numbers, ethertypes, header lengths and the walk's limits are `ipsec_common::abi`'s,
//!   re-exported here: the eBPF parser (which cannot share this code: verifier) reads the same
//!   constants, and `tests/parsers.rs` pins both parsers to the same verdicts.
//! - No I/O, no allocation, nothing above it: `wire` imports only `ipsec_common` and `std`.

pub mod checksum;
mod esp;
mod ethernet;
mod ext;
mod icmpv6;
mod ipv6;
mod tcp;
mod udp;
mod vnet;

pub use esp::{EspPacket, esp_header};
pub use ethernet::{EthernetFrame, Link};
pub use ext::{ExtHeader, ExtWalk, FragmentHeader, FragmentRepr};
pub use icmpv6::Icmpv6Packet;
pub use ipsec_common::abi::{
    ESP_HEADER_LEN, ETH_HEADER_LEN, FRAGMENT_HEADER_LEN, IPV6_HEADER_LEN, MAX_EXT_HEADERS,
    MAX_L4_OFFSET, MAX_VLAN_TAGS, VLAN_TAG_LEN, ethertype, is_extension_header,
    is_walked_extension_header, proto,
};
pub use ipv6::{Ipv6Packet, Ipv6Repr, NEXT_HEADER_OFFSET};
pub use tcp::{TcpPacket, tcp_flags};
pub use udp::{UdpPacket, ports};
pub use vnet::{VNET_HDR_LEN, VirtioNetHdr, vnet_flags, vnet_gso};

/// Why bytes are not the header they should be.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before a header or a length it announces.
    #[error("truncated packet: {what}")]
    Truncated { what: &'static str },
    /// A field holds a value the header cannot have.
    #[error("malformed packet: {what}")]
    Malformed { what: &'static str },
    /// The extension-header chain is longer than [`MAX_EXT_HEADERS`].
    #[error("more than {max} ipv6 extension headers")]
    TooManyExtHeaders { max: usize },
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    #[error("more than {max} vlan tags")]
    TooManyVlanTags { max: usize },
}

/// Defines a view: the struct over `T: AsRef<[u8]>`, `new_unchecked`, `new_checked` (which runs
/// `check_len`: generated from a minimum length in brackets, or written by the type),
/// `into_inner`, and a getter for each listed big-endian field (offset after `=`), with a setter
/// where one is named.
macro_rules! view {
    (
        $(#[$doc:meta])*
        $name:ident $([$min:expr, $what:literal])? {
            $( $(#[$fdoc:meta])* $field:ident: $ty:ty = $at:expr $(, $set:ident)?; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps bytes without checks: accessors never panic, but read 0 past the end. For
            /// a caller that has checked the length itself.
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wraps untrusted bytes: everything the accessors read is present.
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::WireError> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            $(
                /// The checks of `new_checked`: the fixed header is present.
                pub fn check_len(&self) -> Result<(), $crate::wire::WireError> {
                    if self.buffer.as_ref().len() < $min {
                        return Err($crate::wire::WireError::Truncated { what: $what });
                    }
                    Ok(())
                }
            )?

            /// The buffer, as it was wrapped.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            $(
                $(#[$fdoc])*
                pub fn $field(&self) -> $ty {
                    <$ty as $crate::wire::Field>::read(self.buffer.as_ref(), $at)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $($(
                #[doc = concat!("Writes the field `", stringify!($field), "` reads.")]
                pub fn $set(&mut self, value: $ty) {
                    <$ty as $crate::wire::Field>::write(value, self.buffer.as_mut(), $at);
                }
            )?)*
        }
    };
}
use view;

/// A big-endian field of a header. Read past the end of the buffer it is 0 and written there it
/// is dropped: a view checks its length before reading, so neither happens after `new_checked`,
/// and nothing can panic even on a view made with `new_unchecked`.
trait Field: Sized {
    fn read(buf: &[u8], at: usize) -> Self;
    fn write(self, buf: &mut [u8], at: usize);
}

macro_rules! be_field {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            fn read(buf: &[u8], at: usize) -> Self {
                array(buf, at).map_or(0, <$ty>::from_be_bytes)
            }

            fn write(self, buf: &mut [u8], at: usize) {
                put(buf, at, &self.to_be_bytes());
            }
        }
    )*};
}
be_field!(u8, u16, u32);

/// `N` bytes of `buf` at `at`, or `None` past its end: the one place views read fixed fields.
fn array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Writes `bytes` at `at` if they fit (see [`Field`]).
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(field) = buf.get_mut(at..at + bytes.len()) {
        field.copy_from_slice(bytes);
    }
}
