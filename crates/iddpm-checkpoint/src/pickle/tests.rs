//! The reader against Python-written pickles and against hostile ones.

use super::*;

/// `pickle.dumps(d, protocol=4)` by CPython 3 of
/// `d = OrderedDict(a=[1, -2, 300, 70000, -2**40], b=(1.5, None, True), c=b'xy', s='hé')`
/// followed by `d['rep'] = d['a']`: the memo shares the list `a`.
const PROTOCOL_4: &[u8] = b"\x80\x04\x95o\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\xffe\x8c\x01b\x94G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87\x94\x8c\x01c\x94C\x02xy\x94\x8c\x01s\x94\x8c\x03h\xc3\xa9\x94\x8c\x03rep\x94h\x05u.";

fn ints(values: &[i64]) -> Value {
    Value::List(values.iter().map(|&i| Value::Int(i)).collect())
}

#[test]
fn reads_a_python_pickle_with_shared_memo_entries() {
    let v = parse(PROTOCOL_4).unwrap();
    let a = ints(&[1, -2, 300, 70000, -(1 << 40)]);
    assert_eq!(v.dict_get("a"), Some(&a));
    // The list was memoised while empty and filled afterwards: the fetched copy must see the
    // items, as Python's shared reference does.
    assert_eq!(v.dict_get("rep"), Some(&a));
    assert_eq!(
        v.dict_get("b"),
        Some(&Value::Tuple(vec![
            Value::Float(1.5),
            Value::None,
            Value::Bool(true)
        ]))
    );
    assert_eq!(v.dict_get("c"), Some(&Value::Bytes(b"xy".to_vec())));
    assert_eq!(v.dict_get("s"), Some(&Value::Str("hé".into())));
}

#[test]
fn every_truncation_is_an_error() {
    for end in 0..PROTOCOL_4.len() {
        assert!(parse(&PROTOCOL_4[..end]).is_err(), "prefix of {end} bytes");
    }
}

/// A list fetched twice into a tuple that replaces it in the memo, `rounds` times: 8 bytes
/// per doubling of the value Python would share.
fn doubling_pickle(rounds: usize) -> Vec<u8> {
    let mut p = b"\x80\x02]q\x00".to_vec();
    for _ in 0..rounds {
        p.extend_from_slice(b"(h\x00h\x00tq\x00");
    }
    p.push(b'.');
    p
}

#[test]
fn shared_values_fetched_exponentially_often_hit_the_budget_quickly() {
    // 10 rounds build 2^11 - 1 values: well inside the budget.
    assert!(parse(&doubling_pickle(10)).is_ok());
    let start = std::time::Instant::now();
    let err = parse(&doubling_pickle(60)).unwrap_err();
    assert!(err.contains("budget"), "{err}");
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000)); // TUPLE1
    p.push(b'.');
    let err = parse(&p).unwrap_err();
    assert!(err.contains("levels deep"), "{err}");
    // Just inside the limit is fine.
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, MAX_DEPTH as usize - 1));
    p.push(b'.');
    assert!(parse(&p).is_ok());
}

#[test]
fn a_list_appended_to_itself_is_refused() {
    // l = []; l.append(l)
    let err = parse(b"\x80\x02]q\x00h\x00a.").unwrap_err();
    assert!(err.contains("levels deep"), "{err}");
}

#[test]
fn globals_outside_the_allow_list_are_refused_by_name() {
    let err = parse(b"cos\nsystem\n(S'true'\ntR.").unwrap_err();
    assert!(err.contains("os.system"), "{err}");
    let err = parse(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
    assert!(err.contains("builtins.eval"), "{err}");
}

/// `_rebuild_tensor_v2(storage, offset, (2,), (1,))` over a 2-element FloatStorage.
fn tensor_pickle(offset: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000");
    p.extend_from_slice(b"X\x03\x00\x00\x00cpuK\x02tQ");
    p.extend_from_slice(offset);
    p.extend_from_slice(b"K\x02\x85K\x01\x85tR.");
    p
}

#[test]
fn tensor_views_are_read_and_negative_offsets_refused() {
    let Value::Tensor(t) = parse(&tensor_pickle(b"K\x00")).unwrap() else {
        panic!("not a tensor");
    };
    assert_eq!((t.offset, t.shape, t.stride), (0, vec![2], vec![1]));
    assert_eq!((t.storage.key.as_str(), t.storage.numel), ("0", 2));
    let err = parse(&tensor_pickle(b"J\xff\xff\xff\xff")).unwrap_err();
    assert!(err.contains("offset -1"), "{err}");
}

#[test]
fn errors_describe_values_without_printing_them() {
    // REDUCE on a 100,000-byte string: the message stays short.
    let mut p = b"\x80\x02X\xa0\x86\x01\x00".to_vec();
    p.extend(std::iter::repeat_n(b'x', 100_000));
    p.extend_from_slice(b")R.");
    let err = parse(&p).unwrap_err();
    assert!(err.len() < 200, "{} bytes", err.len());
}
