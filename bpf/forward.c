// SPDX-License-Identifier: MIT OR GPL-2.0 (the kernel takes GPL-only helpers from GPL-compatible programs)
//
// chorus's in-kernel relay: a tc (tcx) ingress program that forwards the
// RTP of latched plain streams. The media worker installs one entry per
// receiving port once userspace has relayed that stream's first packets
// and nothing but forwarding is left to do; the worker removes it before
// any change. Everything else (RTCP, telephone events, another source,
// anything odd) passes on untouched, to the worker's socket, where the
// userspace relay applies its rules.
//
// Built by chorus's build.rs with Debian's clang:
//   clang -O2 -g -target bpf -c forward.c

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)BPF_FUNC_ktime_get_coarse_ns;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to,
                                   __u64 flags) = (void *)BPF_FUNC_l4_csum_replace;
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen,
                                  __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

// Where a packet arrived: chorus's receiving socket (network byte order).
struct fwd_key {
    __u32 addr;
    __u16 port;
    __u16 pad;
};

// What to do with it. Must match `src/offload/map.rs`.
struct fwd_val {
    __u32 src_addr; // the latched peer: any other source goes to userspace
    __u16 src_port;
    __u8 tos;       // DSCP and ECN of what chorus sends (ECN kept from the packet)
    __u8 pad0;
    __u32 out_addr; // chorus's socket on the other side
    __u16 out_port;
    __u16 pad1;
    __u32 dst_addr; // where the other leg receives
    __u16 dst_port;
    __u16 pad2;
    __u64 punt[2];  // payload types userspace must see (telephone events)
    __u64 packets;  // forwarded here, read back by the worker
    __u64 bytes;    // UDP payload bytes
    __u64 last_ns;  // CLOCK_MONOTONIC of the last one
    __u32 seq_max;  // highest RTP sequence number, extended with its cycles
    __u32 ifindex;  // where the route to dst leaves; 0: dst is this host
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    // Entries are allocated as streams come, not 9 MB up front.
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct fwd_key);
    __type(value, struct fwd_val);
} chorus_fwd SEC(".maps");

// All streams together, for /metrics.
struct totals {
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct totals);
} chorus_fwd_totals SEC(".maps");

#define IP_OFF ETH_HLEN
#define UDP_OFF (ETH_HLEN + sizeof(struct iphdr))
#define IP_CSUM (IP_OFF + __builtin_offsetof(struct iphdr, check))
#define UDP_CSUM (UDP_OFF + __builtin_offsetof(struct udphdr, check))

// Ones' complement sums, folded to 32 and to 16 bits.
static __u32 fold32(__u64 s)
{
    s = (s & 0xffffffff) + (s >> 32);
    return (__u32)((s & 0xffffffff) + (s >> 32));
}

static __u16 fold16(__u64 s)
{
    __u32 x = fold32(s);
    x = (x & 0xffff) + (x >> 16);
    return (__u16)((x & 0xffff) + (x >> 16));
}

SEC("classifier")
int chorus_forward(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = data + UDP_OFF;
    __u8 *rtp = data + UDP_OFF + sizeof(struct udphdr);

    if ((void *)(rtp + 12) > end)
        return TC_ACT_UNSPEC;
    if (eth->h_proto != __builtin_bswap16(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    // Fragments (more-fragments flag or an offset) are reassembled by the stack.
    if (ip->frag_off & __builtin_bswap16(0x3fff))
        return TC_ACT_UNSPEC;

    struct fwd_key key = {.addr = ip->daddr, .port = udp->dest};
    struct fwd_val *v = bpf_map_lookup_elem(&chorus_fwd, &key);
    if (!v || ip->saddr != v->src_addr || udp->source != v->src_port)
        return TC_ACT_UNSPEC;
    // RTP version 2 only; RTCP on a multiplexed port (RFC 5761: types
    // 64-95 with the marker) and telephone events are userspace's.
    __u8 pt = rtp[1] & 0x7f;
    if ((rtp[0] & 0xc0) != 0x80 || (pt >= 64 && pt < 96))
        return TC_ACT_UNSPEC;
    if ((v->punt[pt >> 6] >> (pt & 63)) & 1)
        return TC_ACT_UNSPEC;
    __u16 udp_len = __builtin_bswap16(udp->len);
    if (udp_len < sizeof(struct udphdr) + 12)
        return TC_ACT_UNSPEC;

    __u64 bytes = udp_len - sizeof(struct udphdr);
    // RFC 3550 A.1's rule, so the worker's loss figure stays right: ahead
    // by less than 3000 moves the maximum, anything else leaves it.
    __u16 seq = ((__u16)rtp[2] << 8) | rtp[3];
    __u32 max = v->seq_max;
    __u16 ahead = seq - (__u16)max;
    if (ahead != 0 && ahead < 3000)
        v->seq_max = max + ahead;
    __sync_fetch_and_add(&v->packets, 1);
    __sync_fetch_and_add(&v->bytes, bytes);
    // Coarse (a tick): the worker only needs it for the media timeout.
    v->last_ns = bpf_ktime_get_coarse_ns();
    __u32 zero = 0;
    struct totals *t = bpf_map_lookup_elem(&chorus_fwd_totals, &zero);
    if (t) {
        t->packets += 1;
        t->bytes += bytes;
    }

    // The rewrite, in place. The IP header checksum is always complete and
    // is updated here (RFC 1624); the UDP checksum may be complete, partial
    // (offloaded: only the pseudo-header sum) or absent, which only the
    // kernel's helper knows: it gets the two differences, the addresses'
    // (pseudo-header) and the ports'.
    __u32 first = *(__u32 *)ip, new_first = first;
    ((__u8 *)&new_first)[1] = (v->tos & 0xfc) | (((__u8 *)&first)[1] & 3);
    __u32 ports = *(__u32 *)udp;
    __u32 new_ports = ((__u32)v->dst_port << 16) | v->out_port;
    __u64 d_addr = (__u64)~ip->saddr + ~ip->daddr + v->out_addr + v->dst_addr;
    __u64 d_ports = (__u64)~ports + new_ports;
    __u64 d_ip = d_addr + (__u32)~first + new_first + (__u16)~ip->check;
    ip->saddr = v->out_addr;
    ip->daddr = v->dst_addr;
    *(__u32 *)ip = new_first;
    ip->check = ~fold16(d_ip);
    *(__u32 *)udp = new_ports;
    // A zero UDP checksum (none) stays zero: BPF_F_MARK_MANGLED_0.
    bpf_l4_csum_replace(skb, UDP_CSUM, 0, fold32(d_addr), BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR);
    bpf_l4_csum_replace(skb, UDP_CSUM, 0, fold32(d_ports), BPF_F_MARK_MANGLED_0);

    // To a peer on this host: the stack delivers it by its new header.
    // Elsewhere: out of the interface the worker's route lookup named,
    // with the neighbour (MAC) resolved by the kernel. bpf_fib_lookup is
    // not used: it answers only where IP forwarding is on, and a media
    // relay need not be a router.
    if (!v->ifindex)
        return TC_ACT_OK;
    return bpf_redirect_neigh(v->ifindex, 0, 0, 0);
}

char _license[] SEC("license") = "Dual MIT/GPL";
