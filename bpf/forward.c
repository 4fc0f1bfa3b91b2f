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
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)BPF_FUNC_ktime_get_coarse_ns;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to,
                                   __u64 flags) = (void *)BPF_FUNC_l4_csum_replace;
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen,
                                  __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

// Where a packet arrived: chorus's receiving socket (network byte order;
// an IPv4 address in addr[0], the rest zero).
struct fwd_key {
    __u32 addr[4];
    __u16 port;
    __u16 family; // 4 or 6
};

// What to do with it. Must match `src/offload/map.rs`.
struct fwd_val {
    __u32 src_addr[4]; // the latched peer: any other source goes to userspace
    __u32 out_addr[4]; // chorus's socket on the other side
    __u32 dst_addr[4]; // where the other leg receives
    __u16 src_port;
    __u16 out_port;
    __u16 dst_port;
    __u8 tos;          // DSCP (ECN is kept from the packet)
    __u8 pad0;
    __u64 punt[2];     // payload types userspace must see (telephone events)
    __u64 packets;     // forwarded here, read back by the worker
    __u64 bytes;       // UDP payload bytes
    __u64 last_ns;     // CLOCK_MONOTONIC (coarse) of the last one
    __u32 seq_max;     // highest RTP sequence number, extended with its cycles
    __u32 ifindex;     // where the route to dst leaves; 0: dst is this host
    // Interarrival jitter (RFC 3550 A.8) of the payload types whose RTP
    // clock is `clock` Hz (0: none is measured).
    __u64 jitter_pts[2];
    __u64 jitter_q4;   // in timestamp units, scaled by 16 as in A.8
    __u32 clock;
    __u32 last_transit; // arrival minus RTP timestamp, in timestamp units
    __u32 has_transit;  // last_transit is set
    __u32 clock_mul;    // clock * 2^34 / 10^9, see jitter()
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

// Whether the RTP after a UDP header of `udp_len` is for the kernel to
// forward: version 2, not RTCP on a multiplexed port (RFC 5761: types
// 64-95 with the marker), not a payload type userspace must see.
static __always_inline int forwardable(struct fwd_val *v, __u8 *rtp, __u16 udp_len)
{
    __u8 pt = rtp[1] & 0x7f;
    if ((rtp[0] & 0xc0) != 0x80 || (pt >= 64 && pt < 96))
        return 0;
    if ((v->punt[pt >> 6] >> (pt & 63)) & 1)
        return 0;
    return udp_len >= sizeof(struct udphdr) + 12;
}

// RFC 3550 A.8 for a forwarded packet, as the userspace relay does it
// (`media::stats`): J += (|D| - J) / 16, kept scaled by 16. Arrival in
// timestamp units is (ns >> 10) * clock_mul >> 24, clock_mul being
// clock * 2^34 / 10^9: a multiply, not two divisions. Its low 32 bits are
// right even when the product wraps.
static __always_inline void jitter(struct fwd_val *v, __u8 *rtp)
{
    __u8 pt = rtp[1] & 0x7f;
    __u32 clock = v->clock;
    if (!clock || !((v->jitter_pts[pt >> 6] >> (pt & 63)) & 1))
        return;
    __u32 ts = ((__u32)rtp[4] << 24) | ((__u32)rtp[5] << 16) | ((__u32)rtp[6] << 8) | rtp[7];
    __u32 arrival = (__u32)(((bpf_ktime_get_ns() >> 10) * v->clock_mul) >> 24);
    __u32 transit = arrival - ts;
    if (v->has_transit) {
        __s32 d = (__s32)(transit - v->last_transit);
        __u64 ad = d < 0 ? -(__s64)d : d;
        __u64 j = v->jitter_q4;
        v->jitter_q4 = j + ad - ((j + 8) >> 4);
    }
    v->last_transit = transit;
    v->has_transit = 1;
}

// Counts a forwarded packet: the entry's and everyone's counters, and the
// highest sequence number by RFC 3550 A.1's rule (ahead by less than 3000
// moves it), so the worker's loss figure stays right.
static __always_inline void account(struct fwd_val *v, __u8 *rtp, __u16 udp_len)
{
    __u64 bytes = udp_len - sizeof(struct udphdr);
    __u16 seq = ((__u16)rtp[2] << 8) | rtp[3];
    __u32 max = v->seq_max;
    __u16 ahead = seq - (__u16)max;
    if (ahead != 0 && ahead < 3000)
        v->seq_max = max + ahead;
    jitter(v, rtp);
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
}

// The ports' rewrite and their part of the UDP checksum; `d_addr` is the
// addresses' (pseudo-header) difference. The UDP checksum may be complete,
// partial (offloaded: only the pseudo-header sum) or absent, which only
// the kernel's helper knows; a zero one stays zero (BPF_F_MARK_MANGLED_0).
// Then out: to a peer on this host the stack delivers the rewritten packet;
// elsewhere it leaves by the interface the worker's route lookup named,
// the neighbour (MAC) resolved by the kernel. (bpf_fib_lookup answers
// only where IP forwarding is on, and a media relay need not be a router.)
static __always_inline int send_on(struct __sk_buff *skb, struct fwd_val *v, struct udphdr *udp,
                                   __u32 udp_off, __u64 d_addr)
{
    __u32 ports = *(__u32 *)udp;
    __u32 new_ports = ((__u32)v->dst_port << 16) | v->out_port;
    __u64 d_ports = (__u64)~ports + new_ports;
    *(__u32 *)udp = new_ports;
    __u32 csum = udp_off + __builtin_offsetof(struct udphdr, check);
    bpf_l4_csum_replace(skb, csum, 0, fold32(d_addr), BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR);
    bpf_l4_csum_replace(skb, csum, 0, fold32(d_ports), BPF_F_MARK_MANGLED_0);
    if (!v->ifindex)
        return TC_ACT_OK;
    return bpf_redirect_neigh(v->ifindex, 0, 0, 0);
}

static __always_inline int forward_v4(struct __sk_buff *skb, void *data, void *end)
{
    struct iphdr *ip = data + ETH_HLEN;
    struct udphdr *udp = (void *)(ip + 1);
    __u8 *rtp = (void *)(udp + 1);
    if ((void *)(rtp + 12) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    // Fragments (more-fragments flag or an offset) are reassembled by the stack.
    if (ip->frag_off & __builtin_bswap16(0x3fff))
        return TC_ACT_UNSPEC;
    // The headers' lengths agree with each other and with the packet (the
    // stack has checked nothing yet): what is counted and sent is real.
    __u16 udp_len = __builtin_bswap16(udp->len);
    if (__builtin_bswap16(ip->tot_len) != sizeof(struct iphdr) + udp_len ||
        ETH_HLEN + sizeof(struct iphdr) + udp_len > skb->len)
        return TC_ACT_UNSPEC;
    struct fwd_key key = {.addr = {ip->daddr}, .port = udp->dest, .family = 4};
    struct fwd_val *v = bpf_map_lookup_elem(&chorus_fwd, &key);
    if (!v || ip->saddr != v->src_addr[0] || udp->source != v->src_port || !forwardable(v, rtp, udp_len))
        return TC_ACT_UNSPEC;
    account(v, rtp, udp_len);
    // The IP header checksum is always complete: updated here (RFC 1624).
    __u32 first = *(__u32 *)ip, new_first = first;
    ((__u8 *)&new_first)[1] = (v->tos & 0xfc) | (((__u8 *)&first)[1] & 3);
    __u64 d_addr = (__u64)~ip->saddr + ~ip->daddr + v->out_addr[0] + v->dst_addr[0];
    __u64 d_ip = d_addr + (__u32)~first + new_first + (__u16)~ip->check;
    ip->saddr = v->out_addr[0];
    ip->daddr = v->dst_addr[0];
    *(__u32 *)ip = new_first;
    ip->check = ~fold16(d_ip);
    return send_on(skb, v, udp, ETH_HLEN + sizeof(struct iphdr), d_addr);
}

static __always_inline int forward_v6(struct __sk_buff *skb, void *data, void *end)
{
    struct ipv6hdr *ip = data + ETH_HLEN;
    struct udphdr *udp = (void *)(ip + 1);
    __u8 *rtp = (void *)(udp + 1);
    // UDP right after the fixed header only: extension headers go up.
    if ((void *)(rtp + 12) > end || ip->nexthdr != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    __u16 udp_len = __builtin_bswap16(udp->len);
    if (__builtin_bswap16(ip->payload_len) != udp_len || ETH_HLEN + sizeof(struct ipv6hdr) + udp_len > skb->len)
        return TC_ACT_UNSPEC;
    struct fwd_key key = {.port = udp->dest, .family = 6};
    __builtin_memcpy(key.addr, &ip->daddr, 16);
    struct fwd_val *v = bpf_map_lookup_elem(&chorus_fwd, &key);
    if (!v || udp->source != v->src_port || !forwardable(v, rtp, udp_len))
        return TC_ACT_UNSPEC;
    __u32 *saddr = (__u32 *)&ip->saddr, *daddr = (__u32 *)&ip->daddr;
    if (saddr[0] != v->src_addr[0] || saddr[1] != v->src_addr[1] || saddr[2] != v->src_addr[2] ||
        saddr[3] != v->src_addr[3])
        return TC_ACT_UNSPEC;
    account(v, rtp, udp_len);
    __u64 d_addr = 0;
    for (int i = 0; i < 4; i++) {
        d_addr += (__u64)~saddr[i] + ~daddr[i] + v->out_addr[i] + v->dst_addr[i];
        saddr[i] = v->out_addr[i];
        daddr[i] = v->dst_addr[i];
    }
    // Traffic class: chorus's DSCP, the packet's ECN. IPv6 has no header checksum.
    __u8 *vtc = (__u8 *)ip;
    __u8 tc = (__u8)(((vtc[0] & 0x0f) << 4) | (vtc[1] >> 4));
    tc = (v->tos & 0xfc) | (tc & 3);
    vtc[0] = (vtc[0] & 0xf0) | (tc >> 4);
    vtc[1] = (__u8)((vtc[1] & 0x0f) | (tc << 4));
    return send_on(skb, v, udp, ETH_HLEN + sizeof(struct ipv6hdr), d_addr);
}

SEC("classifier")
int chorus_forward(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_UNSPEC;
    if (eth->h_proto == __builtin_bswap16(ETH_P_IP))
        return forward_v4(skb, data, end);
    if (eth->h_proto == __builtin_bswap16(ETH_P_IPV6))
        return forward_v6(skb, data, end);
    return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "Dual MIT/GPL";
