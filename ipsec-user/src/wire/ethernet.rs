//! Ethernet II with up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags: where the network header
//! starts, and what it is.

use super::{ETH_HEADER_LEN, Field, MAX_VLAN_TAGS, VLAN_TAG_LEN, WireError, ethertype, view};

view! {
    /// A view of an Ethernet frame.
    EthernetFrame [ETH_HEADER_LEN, "ethernet header"] {
        /// The ethertype field (a TPID when the frame is tagged).
        ethertype: u16 = 12;
    }
}

/// What follows the link-layer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The ethertype after the tags.
    pub ethertype: u16,
    /// Where the network header starts.
    pub offset: usize,
    /// How many VLAN tags were stepped over.
    pub tags: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Steps over the VLAN tags: the inner ethertype and where its header starts. A tag past
    /// [`MAX_VLAN_TAGS`] is refused before it is read (it could hide IPv6 from a parser that
    /// stops earlier); a tag cut short is truncated.
    pub fn link(&self) -> Result<Link, WireError> {
        let buf = self.buffer.as_ref();
        let mut link = Link {
            ethertype: self.ethertype(),
            offset: ETH_HEADER_LEN,
            tags: 0,
        };
        while link.ethertype == ethertype::VLAN || link.ethertype == ethertype::QINQ {
            if link.tags == MAX_VLAN_TAGS {
                return Err(WireError::TooManyVlanTags { max: MAX_VLAN_TAGS });
            }
            if buf.len() < link.offset + VLAN_TAG_LEN {
                return Err(WireError::Truncated { what: "vlan tag" });
            }
            // The tag is TPID (the ethertype just read), TCI, then the next ethertype.
            link.ethertype = u16::read(buf, link.offset + 2);
            link.offset += VLAN_TAG_LEN;
            link.tags += 1;
        }
        Ok(link)
    }

    /// The bytes after the link-layer header and its tags.
    pub fn payload(&self) -> Result<&[u8], WireError> {
        let offset = self.link()?.offset;
        Ok(self.buffer.as_ref().get(offset..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[u16], inner: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0, 5]);
        }
        f.extend_from_slice(&inner.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f
    }

    #[test]
    fn accessors_and_tags() {
        let f = frame(&[], ethertype::IPV6);
        let e = EthernetFrame::new_checked(&f[..]).expect("a frame");
        assert_eq!(e.ethertype(), ethertype::IPV6);
        let want = |offset, tags| Link {
            ethertype: ethertype::IPV6,
            offset,
            tags,
        };
        assert_eq!(e.link(), Ok(want(14, 0)));
        assert_eq!(e.payload().expect("payload"), &[0x60, 0, 0, 0]);
        let f = frame(&[ethertype::QINQ, ethertype::VLAN], ethertype::IPV6);
        let e = EthernetFrame::new_checked(&f[..]).expect("a frame");
        assert_eq!(e.ethertype(), ethertype::QINQ);
        assert_eq!(e.link(), Ok(want(22, 2)));
        let f = frame(&[ethertype::VLAN; 3], ethertype::IPV6);
        assert_eq!(
            EthernetFrame::new_checked(&f[..]).expect("a frame").link(),
            Err(WireError::TooManyVlanTags { max: 2 })
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let f = frame(&[ethertype::VLAN, ethertype::VLAN], ethertype::IPV6);
        for len in 0..14 {
            assert!(EthernetFrame::new_checked(&f[..len]).is_err(), "{len}");
        }
        for len in 14..22 {
            let e = EthernetFrame::new_checked(&f[..len]).expect("a header");
            assert!(
                matches!(e.link(), Err(WireError::Truncated { .. })),
                "{len}"
            );
        }
        let e = EthernetFrame::new_checked(&f[..22]).expect("a header");
        assert_eq!(e.link().expect("tags fit").offset, 22);
    }
}
