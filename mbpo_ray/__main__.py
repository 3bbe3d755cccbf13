from mbpo_ray.cli import main

raise SystemExit(main())
