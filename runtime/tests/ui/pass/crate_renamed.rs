// `crate = "..."` names a renamed wq.
extern crate wq as my_wq;

#[my_wq::main(crate = "my_wq", scope = "numa")]
async fn main() {
    my_wq::spawn(async {}).await.unwrap();
}
