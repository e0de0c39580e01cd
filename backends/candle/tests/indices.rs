//! Small integer inputs keep their host values (so gathers and KV writes never read a GPU back),
//! the values follow slices and reshapes, and a state buffer never keeps stale host values.

use switchyard_candle::{CandleBuffer, CandleDevice};
use switchyard_runtime::{DType, Device, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};

#[test]
fn ids_and_positions_keep_host_values_through_slices() {
    let cpu = CandleDevice::cpu();
    let mut b = GraphBuilder::new("idx");
    let table = b
        .input("table", TensorSpec::new(DType::F32, [5, 2]))
        .unwrap();
    let pos = b.input("pos", TensorSpec::new(DType::I32, [1, 4])).unwrap();
    let cache = b
        .state("cache", TensorSpec::new(DType::F32, [1, 6, 2]))
        .unwrap();
    // Rows 1..3 of the positions, as ids into the table and as the KV-write offset.
    let mid = b.slice(pos, 1, 1, 2).unwrap();
    let flat = b.reshape(mid, [2]).unwrap();
    let rows = b.gather(table, flat).unwrap();
    let rows3 = b.reshape(rows, [1, 2, 2]).unwrap();
    let at = b.slice(flat, 0, 0, 1).unwrap();
    let w = b.kv_write(cache, rows3, at, 1).unwrap();
    b.update_state("cache", w).unwrap();
    b.output("rows", rows).unwrap();
    let exe = cpu
        .compile(&b.finish().unwrap(), &Default::default())
        .unwrap();

    let table: Vec<f32> = (0..10).map(|v| v as f32).collect();
    let t = cpu
        .upload(&HostTensor::from_f32(&[5, 2], &table).unwrap())
        .unwrap();
    let p = cpu
        .upload(&HostTensor::from_i32(&[1, 4], &[0, 3, 1, 4]).unwrap())
        .unwrap();
    assert!(
        matches!(&p, CandleBuffer::Indices { values, .. } if values[..] == [0, 3, 1, 4]),
        "small integer uploads keep their values: {p:?}"
    );
    // A state buffer uploaded from the host is written in place: no stale host copy survives.
    let mut c = cpu
        .upload(&HostTensor::from_f32(&[1, 6, 2], &[0.0; 12]).unwrap())
        .unwrap();
    let out = cpu
        .execute(
            &exe,
            ExecuteArgs::new()
                .input("table", &t)
                .input("pos", &p)
                .state("cache", &mut c),
        )
        .unwrap();
    assert_eq!(
        cpu.download(&out[0]).unwrap().to_f32_vec().unwrap(),
        vec![6.0, 7.0, 2.0, 3.0]
    );
    let cache = cpu.download(&c).unwrap().to_f32_vec().unwrap();
    assert_eq!(
        cache,
        vec![0., 0., 0., 0., 0., 0., 6., 7., 2., 3., 0., 0.],
        "rows written at position 3"
    );

    // An integer state buffer from the host loses its host values once bound as state.
    let mut g = GraphBuilder::new("int-state");
    let s = g
        .state("s", TensorSpec::new(DType::I32, [1, 3, 1]))
        .unwrap();
    let x = g
        .input("x", TensorSpec::new(DType::I32, [1, 1, 1]))
        .unwrap();
    let at = g.input("at", TensorSpec::new(DType::I32, [1])).unwrap();
    let w = g.kv_write(s, x, at, 1).unwrap();
    g.update_state("s", w).unwrap();
    g.output("written", w).unwrap();
    let exe = cpu
        .compile(&g.finish().unwrap(), &Default::default())
        .unwrap();
    let mut s = cpu
        .upload(&HostTensor::from_i32(&[1, 3, 1], &[1, 2, 3]).unwrap())
        .unwrap();
    assert!(matches!(s, CandleBuffer::Indices { .. }));
    let x = cpu
        .upload(&HostTensor::from_i32(&[1, 1, 1], &[9]).unwrap())
        .unwrap();
    let at = cpu
        .upload(&HostTensor::from_i32(&[1], &[1]).unwrap())
        .unwrap();
    cpu.execute(
        &exe,
        ExecuteArgs::new()
            .input("x", &x)
            .input("at", &at)
            .state("s", &mut s),
    )
    .unwrap();
    assert!(matches!(s, CandleBuffer::Tensor(_)), "{s:?}");
    assert_eq!(
        cpu.download(&s).unwrap().to_i64_vec().unwrap(),
        vec![1, 9, 3]
    );
}
