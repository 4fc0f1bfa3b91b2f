use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Audio(usize),
    Mark,
    Clear,
    TopUp,
    /// The worker plays this many items.
    Play(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..20_000).prop_map(Op::Audio),
        Just(Op::Mark),
        Just(Op::Clear),
        Just(Op::TopUp),
        (0usize..20).prop_map(Op::Play),
    ]
}

proptest! {
    /// Whatever an application sends, in any order: the backlog stays
    /// within its bounds, the worker's ring never overfills, and every mark
    /// comes back once, in order (played or cleared).
    #[test]
    fn bounded_and_marks_in_order(ops in proptest::collection::vec(op(), 1..200)) {
        let tap = Tap::default();
        let mut b = Backlog::new(8000);
        let mut echoed = Vec::new();
        let mut made = 0u64;
        for o in ops {
            match o {
                Op::Audio(n) => { b.audio(&vec![1i16; n]); }
                Op::Mark => { made += 1; b.mark(format!("m{made}")); }
                Op::Clear => echoed.extend(b.clear(&tap)),
                Op::TopUp => b.top_up(&tap),
                Op::Play(n) => for _ in 0..n {
                    if let Some(Back::Mark(id)) = tap.take_back() {
                        echoed.extend(b.marks.remove(&id));
                    }
                },
            }
            prop_assert!(b.pcm.len() <= 8000 * BACKLOG_SECONDS);
            prop_assert!(tap.back_len() <= crate::media::tap::BACK_FRAMES);
            prop_assert!(b.marks.len() <= MAX_MARKS);
        }
        // Drain: everything left plays out.
        for _ in 0..100_000 {
            b.top_up(&tap);
            match tap.take_back() {
                Some(Back::Mark(id)) => echoed.extend(b.marks.remove(&id)),
                Some(Back::Audio { .. }) => {}
                None if !b.waiting() => break,
                None => {}
            }
        }
        let want: Vec<String> = (1..=made).map(|i| format!("m{i}")).collect();
        prop_assert_eq!(echoed, want);
    }
}

#[test]
fn a_mark_waits_for_the_audio_before_it() {
    let tap = Tap::default();
    let mut b = Backlog::new(8000);
    b.audio(&[5; 200]);
    b.mark("end".into());
    b.top_up(&tap);
    // 160 samples, then the 40 left padded to a frame, then the mark.
    assert!(matches!(tap.take_back(), Some(Back::Audio { len: 160, .. })));
    assert!(matches!(tap.take_back(), Some(Back::Audio { pcm, .. }) if pcm[39] == 5 && pcm[40] == 0));
    assert!(matches!(tap.take_back(), Some(Back::Mark(1))));
}

#[test]
fn the_end_of_a_file_plays_once_padded_to_a_frame() {
    let tap = Tap::default();
    let mut b = Backlog::new(48000);
    b.audio(&[7i16; 960 + 100]);
    b.top_up(&tap);
    assert!(tap.take_back().is_some() && tap.take_back().is_none());
    assert!(b.waiting(), "100 samples wait for more");
    b.pad_to_frame();
    b.top_up(&tap);
    match tap.take_back() {
        Some(Back::Audio { len, pcm, .. }) => assert_eq!((len, pcm[99], pcm[100]), (960, 7, 0)),
        _ => panic!("no audio frame"),
    }
    assert!(!b.waiting());
}
