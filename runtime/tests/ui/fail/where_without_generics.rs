#[wq::test]
async fn t()
where
    u8: Copy,
{
}

fn main() {}
