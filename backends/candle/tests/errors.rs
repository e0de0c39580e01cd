//! Bad input to the candle device gets errors that name what is wrong, never a panic.

use switchyard_candle::CandleDevice;
use switchyard_runtime::{DType, Device, Dim, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};

fn kv_graph() -> switchyard_runtime::Graph {
    let mut b = GraphBuilder::new("kv");
    let cache = b
        .state("cache", TensorSpec::new(DType::F32, [1, 2, 4, 3]))
        .unwrap();
    let new = b
        .input(
            "new",
            TensorSpec::new(
                DType::F32,
                vec![
                    Dim::Fixed(1),
                    Dim::Fixed(2),
                    Dim::sym("t", 4),
                    Dim::Fixed(3),
                ],
            ),
        )
        .unwrap();
    let pos = b.input("pos", TensorSpec::new(DType::I32, [1])).unwrap();
    let table = b
        .weight("table", TensorSpec::new(DType::F32, [5, 3]))
        .unwrap();
    let ids = b.input("ids", TensorSpec::new(DType::U32, [2])).unwrap();
    let w = b.kv_write(cache, new, pos, 2).unwrap();
    b.update_state("cache", w).unwrap();
    let e = b.gather(table, ids).unwrap();
    b.output("cache_now", w).unwrap();
    b.output("emb", e).unwrap();
    b.finish().unwrap()
}

struct Fixture {
    dev: CandleDevice,
    exe: switchyard_candle::CandleExecutable,
}

fn fixture() -> Fixture {
    let dev = CandleDevice::cpu();
    let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
    Fixture { dev, exe }
}

#[test]
fn state_is_updated_in_place_and_outputs_do_not_alias_it() {
    let f = fixture();
    let mut cache = f.dev.allocate(DType::F32, &[1, 2, 4, 3]).unwrap();
    let table = f
        .dev
        .upload(
            &HostTensor::from_f32(&[5, 3], &(0..15).map(|v| v as f32).collect::<Vec<_>>()).unwrap(),
        )
        .unwrap();
    let ids = f
        .dev
        .upload(&HostTensor::from_u32(&[2], &[4, 0]).unwrap())
        .unwrap();
    let mut outs = Vec::new();
    for step in 0..2 {
        let new = f
            .dev
            .upload(&HostTensor::from_f32(&[1, 2, 1, 3], &[(step + 1) as f32; 6]).unwrap())
            .unwrap();
        let pos = f
            .dev
            .upload(&HostTensor::from_i32(&[1], &[step]).unwrap())
            .unwrap();
        let out = f
            .dev
            .execute(
                &f.exe,
                ExecuteArgs::new()
                    .input("new", &new)
                    .input("pos", &pos)
                    .input("table", &table)
                    .input("ids", &ids)
                    .state("cache", &mut cache),
            )
            .unwrap();
        outs.push(f.dev.download(&out[0]).unwrap());
        assert_eq!(
            f.dev.download(&out[1]).unwrap().to_f32_vec().unwrap(),
            vec![12., 13., 14., 0., 1., 2.]
        );
    }
    let c = f.dev.download(&cache).unwrap().to_f32_vec().unwrap();
    // Head 0: positions 0 and 1 hold 1 and 2; positions 2 and 3 are untouched zeros.
    assert_eq!(&c[..12], &[1., 1., 1., 2., 2., 2., 0., 0., 0., 0., 0., 0.]);
    // The first step's output was a copy taken then, not a view of the cache.
    assert_eq!(
        &outs[0].to_f32_vec().unwrap()[..6],
        &[1., 1., 1., 0., 0., 0.]
    );
}

#[test]
fn bad_arguments_are_named() {
    let f = fixture();
    let mut cache = f.dev.allocate(DType::F32, &[1, 2, 4, 3]).unwrap();
    let table = f
        .dev
        .upload(&HostTensor::zeros(DType::F32, &[5, 3]).unwrap())
        .unwrap();
    let ids = f
        .dev
        .upload(&HostTensor::from_u32(&[2], &[1, 2]).unwrap())
        .unwrap();
    let new = f
        .dev
        .upload(&HostTensor::zeros(DType::F32, &[1, 2, 3, 3]).unwrap())
        .unwrap();
    let pos = f
        .dev
        .upload(&HostTensor::from_i32(&[1], &[0]).unwrap())
        .unwrap();
    let run = |new: &_, pos: &_, ids: &_, cache: &mut _| {
        f.dev
            .execute(
                &f.exe,
                ExecuteArgs::new()
                    .input("new", new)
                    .input("pos", pos)
                    .input("table", &table)
                    .input("ids", ids)
                    .state("cache", cache),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // Writing 3 entries at position 2 of a 4-long cache.
    let late = f
        .dev
        .upload(&HostTensor::from_i32(&[1], &[2]).unwrap())
        .unwrap();
    let err = run(&new, &late, &ids, &mut cache);
    assert!(
        err.contains("kv_write") && err.contains("overflows the cache length 4"),
        "{err}"
    );
    // An id past the table.
    let bad_ids = f
        .dev
        .upload(&HostTensor::from_u32(&[2], &[1, 5]).unwrap())
        .unwrap();
    let err = run(&new, &pos, &bad_ids, &mut cache);
    assert!(
        err.contains("gather") && err.contains("index 5 out of range"),
        "{err}"
    );
    // A wrongly shaped input names the input and both shapes.
    let wide = f
        .dev
        .upload(&HostTensor::zeros(DType::F32, &[1, 2, 3, 4]).unwrap())
        .unwrap();
    let err = run(&wide, &pos, &ids, &mut cache);
    assert!(
        err.contains("input 'new'") && err.contains("[1, 2, 3, 4]"),
        "{err}"
    );
    // A symbolic dimension over its maximum.
    let long = f
        .dev
        .upload(&HostTensor::zeros(DType::F32, &[1, 2, 5, 3]).unwrap())
        .unwrap();
    let err = run(&long, &pos, &ids, &mut cache);
    assert!(err.contains("'t' = 5 exceeds its maximum 4"), "{err}");
    // A wrong dtype.
    let fpos = f
        .dev
        .upload(&HostTensor::from_f32(&[1], &[0.0]).unwrap())
        .unwrap();
    let err = run(&new, &fpos, &ids, &mut cache);
    assert!(
        err.contains("input 'pos'") && err.contains("expected i32, got f32"),
        "{err}"
    );
    // A missing input.
    let err = f
        .dev
        .execute(
            &f.exe,
            ExecuteArgs::new()
                .input("new", &new)
                .input("pos", &pos)
                .input("table", &table)
                .state("cache", &mut cache),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing input 'ids'"), "{err}");
}

#[test]
fn quantized_buffers_cannot_be_allocated_and_round_trip_on_upload() {
    let dev = CandleDevice::cpu();
    let err = dev
        .allocate(DType::Q4K, &[2, 256])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("q4_k"), "{err}");
    let mut bytes = vec![7u8; DType::Q8_0.storage_bytes(64)];
    bytes[0] = 0;
    bytes[1] = 0x3c; // scale 1.0 in f16
    bytes[34] = 0;
    bytes[35] = 0x3c;
    let q = HostTensor::new(DType::Q8_0, &[2, 32], bytes).unwrap();
    let buf = dev.upload(&q).unwrap();
    assert_eq!(dev.download(&buf).unwrap(), q);
}
