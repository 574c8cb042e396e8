//! The translator over Gateway API objects generated from the input
//! (`sockgate_fuzz::world`), read as Kubernetes mode reads them: each object
//! through the loader's checks, bad ones dropped, the rest translated, its
//! status carried and rendered (`check_pipeline`).
#![no_main]
use gateway_agent::sources::manifests::load_objects;
use libfuzzer_sys::fuzz_target;
use sockgate_fuzz::world::World;

fuzz_target!(|world: World| {
    let objects = world.objects();
    let count = objects.len();
    let (loaded, problems) = load_objects(objects);
    assert_eq!(
        loaded.snapshot.object_count() + loaded.ignored.len() + problems.len(),
        count,
        "every object is loaded, ignored or reported, once"
    );
    sockgate_fuzz::check_pipeline(loaded);
});
